//! A bound on how deep a module's calls may nest, written into the module itself.
//!
//! # Why
//!
//! WasmEdge 0.14 has no call-depth limit. Its interpreter keeps frames and values in growable
//! vectors on the heap, so a guest whose `_start` calls itself forever, `(func call 0)`, does
//! not overflow anything: the process grows by gigabytes until the cgroup's OOM killer or the
//! host ends it. (Wasmtime traps at once with "call stack exhausted".) Upstream WasmEdge adds a
//! limit later (PRs #4559 and #5040); until the linked libwasmedge has one, [`bound_call_depth`]
//! makes every module count its own stack use and trap when it passes [`BUDGET`].
//!
//! # How
//!
//! The rewrite appends one mutable `i32` global (after the existing globals, so no index
//! changes), starting at 0 and exported as [`COUNTER_EXPORT`], which counts the *stack slots*
//! in use. Around every `call f`, `call_indirect` and `call_ref` it adds:
//!
//! ```text
//! counter += cost; if counter > BUDGET { unreachable }   ;; before the call
//! counter -= cost                                         ;; after it returns
//! ```
//!
//! Both sequences leave the operand stack as they found it, so the call's arguments and results
//! are untouched. The sandbox reads the counter after a trap: over [`BUDGET`], the trap was
//! this check, and [`exhausted`] says so in words.
//!
//! # Cost model
//!
//! A slot stands for one 16-byte value in WasmEdge's interpreter stack. A function costs
//! [`FRAME_SLOTS`] (the frame record WasmEdge keeps per call), plus its parameters and declared
//! locals, plus the most operands its code holds at once (the validator tracks the height); an
//! imported function costs [`FRAME_SLOTS`]. A call through a table or a
//! function reference costs the most any of the module's functions of that type costs (of any
//! type when the module declares subtypes, since a call may then reach a subtype's function).
//! Tail calls (`return_call*`) replace the caller's frame instead of adding one, so they do not
//! touch the counter; instead a function's cost is raised to the costliest function it can
//! turn into through tail calls, which keeps the count an upper bound.
//!
//! # Known limits
//!
//! - Precompiled (AOT) code keeps its frames on the native stack of the thread that runs it,
//!   not in the interpreter's vectors. LLVM's frames for the same functions take 16 bytes for
//!   the cheapest (4 slots), and at worst about 16 bytes per slot (a `v128` spilled across the
//!   call), so [`BUDGET`] slots stay within 4 MiB of the 8 MiB a container's process has. A host
//!   whose `RLIMIT_STACK` is much smaller than 8 MiB could still see such code overflow it.
//! - A trap leaves the counter high, which does not matter: the instance is finished.
//! - With exception handling enabled, an exception unwinding through calls would skip their
//!   decrements and leave the counter high, so later calls would trap early. WasmEdge's default
//!   configuration (the shim's) does not enable that proposal.
//! - A trap in a start function (the start section, run at instantiation) is reported as
//!   WasmEdge's bare "unreachable": the instance whose counter says why does not exist then.
//! - Custom sections that hold code offsets (DWARF) are copied as they are and no longer match
//!   the rewritten code. WasmEdge's own AOT section (`wasmedge`) is dropped for the same reason.
//!
//! The rewrite validates the module first (with wasmparser): its output is then valid too, and
//! the module cannot refer to the new global (an out-of-range index is an error before the
//! rewrite, not a reference to the counter after it).

use std::collections::HashMap;
use std::ops::Range;

use wasm_encoder::{BlockType, ConstExpr, Encode, ExportKind, GlobalType, Instruction, ValType};
use wasmparser::types::{CoreTypeId, Types, TypesRef};
use wasmparser::{
    BinaryReader, BinaryReaderError, FuncValidator, FuncValidatorAllocations, FunctionBody,
    Operator, OperatorsReader, Parser, Payload, ValidPayload, Validator, ValidatorResources,
    WasmFeatures,
};

/// What one call's frame record costs, in stack slots, on top of its params, locals and operands.
pub const FRAME_SLOTS: u32 = 4;

/// How many stack slots the guest's nested calls may hold at once: 256 Ki slots, 4 MiB of
/// interpreter values, and at most about 4 MiB of native stack for precompiled code (see the
/// limits above). The cheapest frames cost [`FRAME_SLOTS`], so at most 65,536 calls nest; a
/// function with a parameter, a few locals and a few operands (about 12 slots) nests some
/// 20,000 deep, about what Wasmtime's default 512 KiB stack holds, and a recursion 1,000 deep
/// of such functions uses 5% of the budget.
pub const BUDGET: u32 = 256 * 1024;

/// The export under which the rewritten module shows its counter. A module that already
/// exports this name is refused ([`RewriteError::ReservedName`]).
pub const COUNTER_EXPORT: &str = "wasmrunner:call-stack-slots";

/// Names this version of the rewrite, for cache keys of code compiled from rewritten modules:
/// change it whenever the rewritten code changes.
pub const REWRITE_VERSION: &str = "call-depth-1";

/// Why a module cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The module does not parse or validate.
    #[error("{0}")]
    Invalid(#[from] BinaryReaderError),
    /// The module already exports [`COUNTER_EXPORT`].
    #[error(
        "it exports {COUNTER_EXPORT:?}, a name wasmrunner reserves for the call-depth counter it \
         adds to every module run by WasmEdge"
    )]
    ReservedName,
    /// The parser stopped before the module's end.
    #[error("it ends early")]
    Unfinished,
    /// The module has as many globals or exports as an index can count: there is no room for
    /// the counter.
    #[error("it has too many {0} for wasmrunner to add its call-depth counter")]
    NoRoom(&'static str),
}

/// Returns `wasm` rewritten to count its stack use and trap past [`BUDGET`] (see the module
/// documentation).
pub fn bound_call_depth(wasm: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let survey = Survey::of(wasm)?;
    let costs = survey.costs();
    emit(wasm, &survey, &costs)
}

/// The trap message for a guest whose counter reads `slots`, if that is over [`BUDGET`] (the
/// trap was the bound's check); `None` otherwise.
pub fn exhausted(slots: u32) -> Option<String> {
    (slots > BUDGET).then(|| {
        format!(
            "call stack exhausted: the guest's calls nested deeper than WasmEdge allows \
             ({slots} stack slots, the limit is {BUDGET}); this is unbounded or too deep recursion"
        )
    })
}

/// What a call instruction calls.
#[derive(Debug, Clone, Copy)]
enum Callee {
    /// `call` / `return_call`: one function, by index.
    Func(u32),
    /// `call_indirect`, `call_ref` and their tail forms: any function of a type, by the
    /// module's type index.
    Typed(u32),
}

/// A call instruction to be wrapped: its bytes in the module and what it calls.
#[derive(Debug)]
struct CallSite {
    at: Range<usize>,
    callee: Callee,
}

/// A defined function's body: where it is in the module and the calls to wrap in it.
#[derive(Debug)]
struct Body {
    /// The body without its size prefix: locals, then code.
    at: Range<usize>,
    calls: Vec<CallSite>,
}

/// What the rewrite needs to know about a validated module.
struct Survey {
    types: Types,
    /// Params, declared locals and most operands at once of each defined function, in order.
    slots: Vec<u32>,
    bodies: Vec<Body>,
    /// Tail calls: (calling function, what it becomes).
    tail_calls: Vec<(u32, Callee)>,
    /// Whether any type declares a supertype (a call by type may reach a subtype's function).
    subtyping: bool,
}

impl Survey {
    /// Validates `wasm` and reads, in the same pass, every function's locals and calls.
    fn of(wasm: &[u8]) -> Result<Self, RewriteError> {
        let mut validator = Validator::new_with_features(WasmFeatures::default());
        let mut allocations = FuncValidatorAllocations::default();
        let mut slots = Vec::new();
        let mut bodies = Vec::new();
        let mut tail_calls = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Payload::ExportSection(exports) = &payload {
                refuse_reserved_name(exports.clone())?;
            }
            match validator.payload(&payload)? {
                ValidPayload::Func(func, body) => {
                    let mut func = func.into_validator(allocations);
                    let (scanned, operands) = scan_body(&mut func, &body, &mut tail_calls)?;
                    slots.push(func.len_locals().saturating_add(operands));
                    bodies.push(scanned);
                    allocations = func.into_allocations();
                }
                ValidPayload::End(types) => {
                    let subtyping = declares_subtypes(types.as_ref());
                    return Ok(Self {
                        types,
                        slots,
                        bodies,
                        tail_calls,
                        subtyping,
                    });
                }
                ValidPayload::Ok | ValidPayload::Parser(_) => {}
            }
        }
        // `parse_all` ends with an `End` payload or an error; this is for a parser that does not.
        Err(RewriteError::Unfinished)
    }

    fn function_count(&self) -> usize {
        self.types.as_ref().function_count() as usize
    }

    fn imported_functions(&self) -> usize {
        self.function_count() - self.bodies.len()
    }

    /// The index the counter global gets: after every imported and defined global.
    fn counter_index(&self) -> Result<u32, RewriteError> {
        let count = self.types.as_ref().global_count();
        count
            .checked_add(1)
            .ok_or(RewriteError::NoRoom("globals"))?;
        Ok(count)
    }

    /// Which functions a call by the type at module index `type_index` may reach.
    fn group_of_type(&self, type_index: u32) -> Group {
        self.group(self.types.as_ref().core_type_at_in_module(type_index))
    }

    fn group_of_function(&self, func: usize) -> Group {
        self.group(self.types.as_ref().core_function_at(func as u32))
    }

    fn group(&self, ty: CoreTypeId) -> Group {
        if self.subtyping {
            Group::Any
        } else {
            Group::Type(ty)
        }
    }

    /// Each function's own cost: the frame, its params and locals, and its operands.
    fn own_costs(&self) -> Vec<u32> {
        let imported = std::iter::repeat_n(FRAME_SLOTS, self.imported_functions());
        let defined = self
            .slots
            .iter()
            .map(|slots| FRAME_SLOTS.saturating_add(*slots).min(BUDGET + 1));
        imported.chain(defined).collect()
    }

    /// What a call to each function, and through each type, adds to the counter.
    fn costs(&self) -> Costs {
        let per_function = self.through_tail_calls(self.own_costs());
        let mut per_group: HashMap<Group, u32> = HashMap::new();
        for (func, cost) in per_function.iter().enumerate() {
            let slot = per_group.entry(self.group_of_function(func)).or_default();
            *slot = (*slot).max(*cost);
        }
        Costs {
            per_function,
            per_group,
        }
    }

    /// Raises each function's cost to that of the costliest function it can turn into
    /// through a chain of tail calls.
    fn through_tail_calls(&self, own: Vec<u32>) -> Vec<u32> {
        if self.tail_calls.is_empty() {
            return own;
        }
        let became = self.tail_call_graph(own.len());
        highest_reachable(own, &became)
    }

    /// The tail-call graph, backwards: `became[n]` lists the nodes that can turn into node
    /// `n`. Nodes are the `functions`, then one per group a typed tail call reaches.
    fn tail_call_graph(&self, functions: usize) -> Vec<Vec<usize>> {
        let mut group_nodes: HashMap<Group, usize> = HashMap::new();
        let mut became: Vec<Vec<usize>> = vec![Vec::new(); functions];
        for (from, callee) in &self.tail_calls {
            let to =
                match callee {
                    Callee::Func(func) => *func as usize,
                    Callee::Typed(ty) => *group_nodes
                        .entry(self.group_of_type(*ty))
                        .or_insert_with(|| {
                            became.push(Vec::new());
                            became.len() - 1
                        }),
                };
            became[to].push(*from as usize);
        }
        for (func, sources) in became.iter_mut().take(functions).enumerate() {
            if let Some(node) = group_nodes.get(&self.group_of_function(func)) {
                sources.push(*node);
            }
        }
        became
    }
}

/// For each of the first `own.len()` nodes of a graph given backwards (`became[n]`: the nodes
/// with an edge to `n`), the highest `own` cost among the nodes it reaches, itself included
/// (nodes past `own` cost 0). Visiting nodes from the costliest down, a walk back from each
/// gives its cost to every node that reaches it and has none yet.
fn highest_reachable(own: Vec<u32>, became: &[Vec<usize>]) -> Vec<u32> {
    let cost = |node: usize| own.get(node).copied().unwrap_or(0);
    let mut order: Vec<usize> = (0..became.len()).collect();
    order.sort_unstable_by_key(|node| std::cmp::Reverse(cost(*node)));
    let mut reached: Vec<Option<u32>> = vec![None; became.len()];
    for start in order {
        if reached[start].is_some() {
            continue;
        }
        reached[start] = Some(cost(start));
        let mut walk = vec![start];
        while let Some(node) = walk.pop() {
            for from in &became[node] {
                if reached[*from].is_none() {
                    reached[*from] = Some(cost(start));
                    walk.push(*from);
                }
            }
        }
    }
    reached
        .into_iter()
        .zip(&own)
        .map(|(reached, own)| reached.unwrap_or(*own))
        .collect()
}

/// A set of functions a call by type may reach: those of one type, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Type(CoreTypeId),
    Any,
}

/// What each call adds to the counter.
struct Costs {
    per_function: Vec<u32>,
    per_group: HashMap<Group, u32>,
}

impl Costs {
    fn of(&self, survey: &Survey, callee: Callee) -> u32 {
        match callee {
            Callee::Func(func) => self
                .per_function
                .get(func as usize)
                .copied()
                .unwrap_or(FRAME_SLOTS),
            Callee::Typed(ty) => self
                .per_group
                .get(&survey.group_of_type(ty))
                .copied()
                .unwrap_or(FRAME_SLOTS)
                .max(FRAME_SLOTS),
        }
    }
}

/// Whether any of the module's types declares a supertype.
fn declares_subtypes(types: TypesRef<'_>) -> bool {
    (0..types.core_type_count_in_module()).any(|index| {
        !types[types.core_type_at_in_module(index)]
            .supertype_idxs
            .is_empty()
    })
}

/// Refuses a module that already exports [`COUNTER_EXPORT`].
fn refuse_reserved_name(exports: wasmparser::ExportSectionReader<'_>) -> Result<(), RewriteError> {
    for export in exports {
        if export?.name == COUNTER_EXPORT {
            return Err(RewriteError::ReservedName);
        }
    }
    Ok(())
}

/// Validates one function body while noting its calls: those to wrap in the returned
/// [`Body`], tail calls in `tail_calls`. Also returns the most operands the body holds at once.
fn scan_body(
    func: &mut FuncValidator<ValidatorResources>,
    body: &FunctionBody<'_>,
    tail_calls: &mut Vec<(u32, Callee)>,
) -> Result<(Body, u32), BinaryReaderError> {
    let mut reader = body.get_binary_reader();
    func.read_locals(&mut reader)?;
    reader.set_features(*func.features());
    let mut operators = OperatorsReader::new(reader);
    let mut calls = Vec::new();
    let mut operands = 0;
    while !operators.eof() {
        let start = operators.original_position();
        let operator = operators.read()?;
        func.op(start, &operator)?;
        operands = operands.max(func.operand_stack_height());
        let at = span(start..operators.original_position());
        match operator {
            Operator::Call { function_index } => calls.push(CallSite {
                at,
                callee: Callee::Func(function_index),
            }),
            Operator::CallIndirect { type_index, .. } | Operator::CallRef { type_index } => calls
                .push(CallSite {
                    at,
                    callee: Callee::Typed(type_index),
                }),
            Operator::ReturnCall { function_index } => {
                tail_calls.push((func.index(), Callee::Func(function_index)))
            }
            Operator::ReturnCallIndirect { type_index, .. }
            | Operator::ReturnCallRef { type_index } => {
                tail_calls.push((func.index(), Callee::Typed(type_index)))
            }
            _ => {}
        }
    }
    operators.finish()?;
    let body = Body {
        at: span(body.range()),
        calls,
    };
    Ok((body, operands))
}

/// A parser range as an index range into the module: offsets come from a parser started at 0
/// over the module's bytes, so they fit in `usize`.
fn span(range: Range<u64>) -> Range<usize> {
    range.start as usize..range.end as usize
}

/// Where a section's id comes in a module's canonical order (ids are not in order: the tag
/// section, 13, sits before globals and the data count, 12, before code).
fn rank(id: u8) -> u8 {
    const ORDER: [u8; 13] = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
    ORDER
        .iter()
        .position(|known| *known == id)
        .map_or(u8::MAX, |at| at as u8)
}

const GLOBAL_SECTION: u8 = 6;
const EXPORT_SECTION: u8 = 7;
const CODE_SECTION: u8 = 10;
const CUSTOM_SECTION: u8 = 0;

/// The custom section in which WasmEdge's AOT compiler stores native code.
const WASMEDGE_AOT_SECTION: &str = "wasmedge";

/// Writes the rewritten module: every section copied as it is, except the globals and exports
/// (one entry more each, added as new sections where the module has none) and the code.
fn emit(wasm: &[u8], survey: &Survey, costs: &Costs) -> Result<Vec<u8>, RewriteError> {
    let counter = survey.counter_index()?;
    let mut module = wasm_encoder::Module::new();
    let mut missing = counter_entries(counter);
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        if let Payload::CustomSection(custom) = &payload
            && custom.name() == WASMEDGE_AOT_SECTION
        {
            continue;
        }
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        let content = &wasm[span(range)];
        if id != CUSTOM_SECTION {
            add_sections_due_before(&mut module, &mut missing, id);
        }
        if let Some(at) = missing.iter().position(|(missing, _)| *missing == id) {
            let (_, entry) = missing.remove(at);
            let data = with_entry(content, &entry, id)?;
            module.section(&wasm_encoder::RawSection { id, data: &data });
        } else if id == CODE_SECTION {
            module.section(&code_section(wasm, survey, costs, counter));
        } else {
            module.section(&wasm_encoder::RawSection { id, data: content });
        }
    }
    add_sections_due_before(&mut module, &mut missing, u8::MAX);
    Ok(module.finish())
}

/// The counter's entries, encoded, by the section they go in: a mutable `i32` global starting
/// at 0 (index `counter`), and its export.
fn counter_entries(counter: u32) -> Vec<(u8, Vec<u8>)> {
    let mut global = Vec::new();
    GlobalType {
        val_type: ValType::I32,
        mutable: true,
        shared: false,
    }
    .encode(&mut global);
    ConstExpr::i32_const(0).encode(&mut global);
    let mut export = Vec::new();
    COUNTER_EXPORT.encode(&mut export);
    ExportKind::Global.encode(&mut export);
    counter.encode(&mut export);
    vec![(GLOBAL_SECTION, global), (EXPORT_SECTION, export)]
}

/// Adds, as sections of one entry, the `missing` sections that come before section `next`.
fn add_sections_due_before(
    module: &mut wasm_encoder::Module,
    missing: &mut Vec<(u8, Vec<u8>)>,
    next: u8,
) {
    while let Some((id, entry)) = missing.first() {
        if rank(*id) >= rank(next) {
            break;
        }
        let mut data = Vec::new();
        1u32.encode(&mut data);
        data.extend_from_slice(entry);
        module.section(&wasm_encoder::RawSection {
            id: *id,
            data: &data,
        });
        missing.remove(0);
    }
}

/// A vector section's `content` (a count, then the entries) with `entry` appended; `id` says
/// which section it is.
fn with_entry(content: &[u8], entry: &[u8], id: u8) -> Result<Vec<u8>, RewriteError> {
    let what = if id == GLOBAL_SECTION {
        "globals"
    } else {
        "exports"
    };
    let mut reader = BinaryReader::new(content, 0);
    let count = reader.read_var_u32()?;
    let entries = &content[reader.current_position()..];
    let mut data = Vec::with_capacity(content.len() + entry.len());
    count
        .checked_add(1)
        .ok_or(RewriteError::NoRoom(what))?
        .encode(&mut data);
    data.extend_from_slice(entries);
    data.extend_from_slice(entry);
    Ok(data)
}

/// The code section with every wrapped call in every body.
fn code_section(
    wasm: &[u8],
    survey: &Survey,
    costs: &Costs,
    counter: u32,
) -> wasm_encoder::CodeSection {
    let mut code = wasm_encoder::CodeSection::new();
    let mut body = Vec::new();
    for function in &survey.bodies {
        body.clear();
        let mut copied = function.at.start;
        for call in &function.calls {
            let cost = costs.of(survey, call.callee);
            body.extend_from_slice(&wasm[copied..call.at.start]);
            enter(counter, cost, &mut body);
            body.extend_from_slice(&wasm[call.at.clone()]);
            leave(counter, cost, &mut body);
            copied = call.at.end;
        }
        body.extend_from_slice(&wasm[copied..function.at.end]);
        code.raw(&body);
    }
    code
}

/// `counter += cost; if counter > BUDGET { unreachable }`. Costs are capped at `BUDGET + 1`
/// and the counter is at most `BUDGET` before it, so the sum fits in an `i32`.
fn enter(counter: u32, cost: u32, sink: &mut Vec<u8>) {
    let sequence = [
        Instruction::GlobalGet(counter),
        Instruction::I32Const(cost as i32),
        Instruction::I32Add,
        Instruction::GlobalSet(counter),
        Instruction::GlobalGet(counter),
        Instruction::I32Const(BUDGET as i32),
        Instruction::I32GtU,
        Instruction::If(BlockType::Empty),
        Instruction::Unreachable,
        Instruction::End,
    ];
    for instruction in &sequence {
        instruction.encode(sink);
    }
}

/// `counter -= cost`, after the call returned.
fn leave(counter: u32, cost: u32, sink: &mut Vec<u8>) {
    let sequence = [
        Instruction::GlobalGet(counter),
        Instruction::I32Const(cost as i32),
        Instruction::I32Sub,
        Instruction::GlobalSet(counter),
    ];
    for instruction in &sequence {
        instruction.encode(sink);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use wasmedge_sdk::error::{CoreError, CoreExecutionError, WasmEdgeError};
    use wasmedge_sdk::vm::SyncInst;
    use wasmedge_sdk::wasi::WasiModule;
    use wasmedge_sdk::{Module, Store, Vm, WasmValue};

    use super::*;
    use crate::engine::{new_config, run_config};

    /// How one call into a rewritten module on WasmEdge ended.
    struct Outcome {
        result: Result<Vec<WasmValue>, Box<WasmEdgeError>>,
        /// The counter when the call returned or trapped.
        slots: Option<u32>,
        took: Duration,
    }

    impl Outcome {
        fn returned(&self) -> Vec<i32> {
            match &self.result {
                Ok(values) => values.iter().map(WasmValue::to_i32).collect(),
                Err(err) => panic!("the call failed: {err}"),
            }
        }

        /// Asserts that the call trapped on the bound's check, and returns the counter.
        fn exhausted(&self) -> u32 {
            assert!(
                matches!(
                    self.result.as_ref().map_err(|err| &**err),
                    Err(WasmEdgeError::Core(CoreError::Execution(
                        CoreExecutionError::Unreachable
                    )))
                ),
                "expected the bound's trap, got {:?}",
                self.result.as_ref().map(|values| values.len())
            );
            let slots = self
                .slots
                .expect("the rewritten module exports its counter");
            assert!(
                exhausted(slots).is_some(),
                "{slots} slots is within the budget"
            );
            slots
        }
    }

    fn wasm(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("test modules are valid text")
    }

    /// Rewrites `text` and calls `func` with `args` in WasmEdge's interpreter, with WASI
    /// imports whose guest sees `argv`.
    fn run(text: &str, func: &str, args: Vec<WasmValue>, argv: &[&str]) -> Outcome {
        let bounded = bound_call_depth(&wasm(text)).expect("rewrite");
        run_bytes(&bounded, false, func, args, argv)
    }

    fn run_bytes(
        bytes: &[u8],
        native: bool,
        func: &str,
        args: Vec<WasmValue>,
        argv: &[&str],
    ) -> Outcome {
        let config = run_config(native, None).expect("config");
        let module = Module::from_bytes(Some(&config), bytes).expect("the module loads");
        let mut wasi = WasiModule::create(Some(argv.to_vec()), None, None).expect("wasi");
        let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
        instances.insert(wasi.name().to_string(), wasi.as_mut());
        let store = Store::new(Some(&config), instances).expect("store");
        let mut vm = Vm::new(store);
        vm.register_module(None, module).expect("instantiate");
        let started = Instant::now();
        let result = vm.run_func(None, func, args);
        Outcome {
            result,
            slots: crate::sandbox::call_stack_slots(&vm),
            took: started.elapsed(),
        }
    }

    const INFINITE: &str = r#"(module (func (export "_start") call 0))"#;

    /// `down(n)` recurses `n` deep through a function with a parameter and three locals, and
    /// returns `n`.
    const DOWN: &str = r#"
        (module
          (func $down (export "down") (param $n i32) (result i32)
            (local $a i32) (local $b i64) (local $c f64)
            local.get $n
            i32.eqz
            if (result i32)
              i32.const 0
            else
              local.get $n
              i32.const 1
              i32.sub
              call $down
              i32.const 1
              i32.add
            end))"#;
    /// One param, three locals, at most two operands.
    const DOWN_COST: u32 = FRAME_SLOTS + 1 + 3 + 2;

    #[test]
    fn infinite_recursion_traps_quickly_over_the_budget() {
        let outcome = run(INFINITE, "_start", vec![], &[]);
        let slots = outcome.exhausted();
        assert!(slots <= BUDGET + FRAME_SLOTS, "{slots}");
        assert!(outcome.took < Duration::from_secs(1), "{:?}", outcome.took);
        let message = exhausted(slots).unwrap_or_default();
        assert!(message.starts_with("call stack exhausted"), "{message}");
    }

    #[test]
    fn moderate_recursion_returns_and_leaves_the_counter_at_zero() {
        let outcome = run(DOWN, "down", vec![WasmValue::from_i32(1000)], &[]);
        assert_eq!(outcome.returned(), vec![1000]);
        assert_eq!(outcome.slots, Some(0));
    }

    #[test]
    fn deep_finite_recursion_is_cut_off_at_its_cost() {
        let outcome = run(DOWN, "down", vec![WasmValue::from_i32(10_000_000)], &[]);
        let slots = outcome.exhausted();
        // Each frame added `DOWN_COST`: the counter stopped at the first multiple over budget.
        assert_eq!(slots % DOWN_COST, 0, "{slots}");
        assert!(slots <= BUDGET + DOWN_COST, "{slots}");
    }

    #[test]
    fn call_indirect_recursion_is_bounded_at_the_callees_cost() {
        // The table's function is declared with a type written twice: a call through either
        // copy may reach it, and costs its 100 locals and 1 operand.
        let locals = "i32 ".repeat(100);
        let text = format!(
            r#"
            (module
              (type $t (func))
              (type $same (func))
              (table 1 funcref)
              (elem (i32.const 0) $f)
              (func $f (export "_start") (type $t) (local {locals})
                i32.const 0
                call_indirect (type $same)))"#
        );
        let cost = FRAME_SLOTS + 100 + 1;
        let outcome = run(&text, "_start", vec![], &[]);
        let slots = outcome.exhausted();
        assert_eq!(slots % cost, 0, "{slots} is not a multiple of {cost}");
        assert!(slots <= BUDGET + cost, "{slots}");
    }

    #[test]
    fn wasi_imports_still_link_and_run() {
        // `argc(depth)` recurses `depth` deep, then asks WASI for the argument count.
        let text = r#"
            (module
              (import "wasi_snapshot_preview1" "args_sizes_get"
                (func $args_sizes_get (param i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func $argc (export "argc") (param $depth i32) (result i32)
                local.get $depth
                if (result i32)
                  local.get $depth
                  i32.const 1
                  i32.sub
                  call $argc
                else
                  i32.const 0
                  i32.const 4
                  call $args_sizes_get
                  drop
                  i32.const 0
                  i32.load
                end))"#;
        let outcome = run(
            text,
            "argc",
            vec![WasmValue::from_i32(100)],
            &["p", "a", "b"],
        );
        assert_eq!(outcome.returned(), vec![3]);
        assert_eq!(outcome.slots, Some(0));
    }

    #[test]
    fn existing_globals_and_exports_keep_their_indices() {
        let text = r#"
            (module
              (global $a i32 (i32.const 5))
              (global $b (export "b") (mut i32) (i32.const 7))
              (func $sum (result i32) global.get $a global.get $b i32.add)
              (func (export "sum") (result i32) call $sum))"#;
        let outcome = run(text, "sum", vec![], &[]);
        assert_eq!(outcome.returned(), vec![12]);
        assert_eq!(outcome.slots, Some(0));
    }

    #[test]
    fn a_module_exporting_the_reserved_name_is_refused() {
        let text = format!(r#"(module (func (export "{COUNTER_EXPORT}")))"#);
        let err = bound_call_depth(&wasm(&text)).expect_err("refused");
        assert!(matches!(err, RewriteError::ReservedName), "{err}");
        assert!(err.to_string().contains(COUNTER_EXPORT), "{err}");
    }

    #[test]
    fn an_invalid_module_is_refused_rather_than_given_the_counter() {
        // `global.get 0` in a module without globals would read the counter once it is added.
        let text = r#"(module (func (result i32) global.get 0))"#;
        let err = bound_call_depth(&wasm(text)).expect_err("refused");
        assert!(matches!(err, RewriteError::Invalid(_)), "{err}");
        let truncated = &wasm(DOWN)[..20];
        let err = bound_call_depth(truncated).expect_err("refused");
        assert!(matches!(err, RewriteError::Invalid(_)), "{err}");
    }

    #[test]
    fn custom_sections_are_kept_but_wasmedge_native_code_is_dropped() {
        let mut bytes = wasm(INFINITE);
        for (name, data) in [("keep", b"data".as_slice()), ("wasmedge", b"\x01\x02")] {
            let mut section = Vec::new();
            name.encode(&mut section);
            section.extend_from_slice(data);
            bytes.push(CUSTOM_SECTION);
            section.as_slice().encode(&mut bytes);
        }
        let bounded = bound_call_depth(&bytes).expect("rewrite");
        let names: Vec<String> = Parser::new(0)
            .parse_all(&bounded)
            .filter_map(|payload| match payload.expect("parses") {
                Payload::CustomSection(custom) => Some(custom.name().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(names, vec!["keep".to_string()]);
    }

    #[test]
    fn a_tail_call_charges_the_costliest_function_it_can_become() {
        // `small` has no locals but becomes `big` (40 locals) by a tail call, and `viatype`
        // becomes any `(func)`; `other` has another type and is not reached.
        let text = r#"
            (module
              (type $v (func))
              (table 2 funcref)
              (func $small (type $v) return_call $big)
              (func $big (type $v) (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
                (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
                (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
                (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64))
              (func $viatype (param i32) (local i32) local.get 0 return_call_indirect (type $v))
              (func $other (param i32) (result i32) (local i32 i32 i32 i32 i32 i32 i32 i32)
                local.get 0))"#;
        let survey = Survey::of(&wasm(text)).expect("valid");
        let costs = survey.costs();
        let big = FRAME_SLOTS + 40;
        assert_eq!(
            costs.per_function,
            vec![big, big, big, FRAME_SLOTS + 1 + 8 + 1]
        );
        let bounded = bound_call_depth(&wasm(text)).expect("rewrite");
        Validator::new()
            .validate_all(&bounded)
            .expect("the rewrite is valid");
    }

    #[test]
    fn each_node_gets_the_highest_cost_it_reaches() {
        // Functions 0 to 4, groups 5 and 6: 0 -> 1 -> 2 -> 1 (a cycle), 3 -> 5 -> 0; 4 and 6
        // reach nothing.
        let became = vec![
            vec![5],
            vec![0, 2],
            vec![1],
            vec![],
            vec![],
            vec![3],
            vec![],
        ];
        let own = vec![4, 9, 6, 2, 5];
        assert_eq!(highest_reachable(own, &became), vec![9, 9, 9, 9, 5]);
    }

    /// `_start` calls `spill(0)`, which recurses forever holding 20 `v128` values loaded from
    /// memory across each call and storing them back after it (the callee might change the
    /// memory, so they cannot be loaded again): native code must keep them whole in its frame,
    /// the costliest frames per slot.
    fn spilling_recursion() -> String {
        let values = 20;
        let locals = "v128 ".repeat(values);
        let load: String = (0..values)
            .map(|i| format!("i32.const {} v128.load local.set {}\n", i * 16, i + 1))
            .collect();
        let store: String = (0..values)
            .map(|i| {
                format!(
                    "i32.const {} local.get {} v128.store\n",
                    1024 + i * 16,
                    i + 1
                )
            })
            .collect();
        format!(
            r#"(module
              (memory 1)
              (func $spill (param i32) (local {locals})
                {load}
                local.get 0 i32.const 1 i32.add call $spill
                {store})
              (func (export "_start") i32.const 0 call $spill))"#
        )
    }

    #[test]
    fn precompiled_code_is_bounded_within_a_containers_stack() {
        let config = new_config().expect("config");
        let compiler = wasmedge_sdk::Compiler::new(Some(&config)).expect("compiler");
        let out = tempfile::tempdir().expect("temp dir");
        for text in [INFINITE.to_string(), spilling_recursion()] {
            let bounded = bound_call_depth(&wasm(&text)).expect("rewrite");
            let file = compiler
                .compile_from_bytes(&bounded, "module", out.path())
                .expect("compiles");
            let native = std::fs::read(file).expect("compiled code");
            // The guest's native frames go on the stack of the thread that runs it. A
            // container's process has 8 MiB (RLIMIT_STACK); the bound must fit well within:
            // an overflow here crashes the test binary.
            let outcome = std::thread::Builder::new()
                .stack_size(5 << 20)
                .spawn(move || run_bytes(&native, true, "_start", vec![], &[]))
                .expect("thread")
                .join()
                .expect("no panic");
            outcome.exhausted();
        }
    }
}
