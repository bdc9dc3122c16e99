//! Memory a container's init process stops needing once its workload is loaded.

/// Returns to the kernel the heap memory that loading the workload freed.
///
/// Compiling or deserializing a module allocates megabytes (Wasmtime compiles on a thread
/// pool, and glibc gives each thread its own malloc arena); once the code is in place that
/// memory is free but glibc keeps the pages, so every long-running container would carry them.
/// Measured: 4 of a Wasmtime container's 6.3 MB of PSS were such pages. Engines call this
/// after instantiating the workload and before running it.
pub fn release_loader_memory() {
    // SAFETY: `malloc_trim` walks glibc's own arenas under their locks and only gives back
    // pages of chunks that are free; no memory the program still uses is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
