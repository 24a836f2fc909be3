use std::process::ExitCode;

// mimalloc rather than glibc's allocator: a lockstep tick allocates and frees many small
// objects per delivery batch (messages, records, payload tables), and glibc's free lists
// and page trimming were a fifth of the embedded engine's profile (BENCHMARKS.md, issue 15).
// Without transparent huge pages (`no_thp`): a run of a few dozen megabytes spent a third of
// its time in the kernel zeroing fresh 2 MB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agora::cli::main(agora::Registry::builtin())
}
