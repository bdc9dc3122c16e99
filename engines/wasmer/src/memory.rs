//! The cap on a guest's linear memory (`wasmrunner.dev/memory`, or the container's memory
//! limit): Wasmer's own tunables, with every memory the guest makes given a maximum no
//! larger than the cap. A `memory.grow` past it fails inside the guest (it returns -1); a
//! memory that starts larger is refused when the module is instantiated.

use std::ptr::NonNull;

use wasmer::sys::vm::{MemoryError, MemoryStyle, TableStyle, VMMemory, VMMemoryDefinition};
use wasmer::sys::vm::{VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableType};

/// Wasmer's tunables for this machine, with linear memories capped at `max_pages`.
pub struct CappedMemory {
    base: BaseTunables,
    max_pages: Option<Pages>,
}

impl CappedMemory {
    pub fn new(max_pages: Option<u32>) -> Self {
        Self {
            base: BaseTunables::new(),
            max_pages: max_pages.map(Pages),
        }
    }

    /// `ty` with its maximum lowered to the cap; an error if it starts above the cap.
    fn capped(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        let Some(cap) = self.max_pages else {
            return Ok(*ty);
        };
        if ty.minimum > cap {
            return Err(MemoryError::Generic(format!(
                "the memory starts with {} pages of 64 KiB, more than the {} pages the guest \
                 may have (wasmrunner.dev/memory, or the container's memory limit)",
                ty.minimum.0, cap.0
            )));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(cap, |max| max.min(cap)));
        Ok(capped)
    }
}

impl Tunables for CappedMemory {
    /// The style is Wasmer's own for the declared type: it is compiled into the code, and the
    /// node's compiled code serves pods with any cap.
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.capped(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let capped = self.capped(ty)?;
        // SAFETY: the caller's guarantee for `vm_definition_location` is passed on unchanged;
        // only the type's maximum is lowered, which the style (Wasmer's own for the declared
        // type) accommodates, as for any smaller memory.
        unsafe {
            self.base
                .create_vm_memory(&capped, style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: the caller's guarantee is passed on unchanged.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}
