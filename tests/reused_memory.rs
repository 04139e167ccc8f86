//! `backend::reuse_freed_memory`: after it, a large block freed and allocated again is served
//! from the memory already mapped (no page faults on writing it); `release` restores the
//! allocator's defaults. Its own test binary, without the test harness (`harness = false`):
//! the switch is process-wide, and glibc serves the main thread from its main arena, where a
//! harness thread would have an arena of its own (which maps blocks over 64 MiB regardless).

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
#[cfg(all(target_os = "linux", target_env = "gnu", feature = "flex"))]
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    after_name
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .expect("minflt")
}

/// Page faults taken while allocating, writing and freeing a 64 MiB block.
#[cfg(all(target_os = "linux", target_env = "gnu", feature = "flex"))]
fn faults_of_a_fresh_block() -> u64 {
    const LEN: usize = 16 << 20;
    let before = minor_faults();
    let mut block: Vec<f32> = Vec::with_capacity(LEN);
    block.extend((0..LEN).map(|i| i as f32));
    std::hint::black_box(&block);
    drop(block);
    minor_faults() - before
}

#[cfg(all(target_os = "linux", target_env = "gnu", feature = "flex"))]
fn main() {
    freed_blocks_are_reused_without_page_faults_until_released();
    println!("reused_memory: freed blocks are reused without page faults until released: ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", feature = "flex")))]
fn main() {
    println!("reused_memory: glibc on Linux with the flex backend only; nothing to check here");
}

#[cfg(all(target_os = "linux", target_env = "gnu", feature = "flex"))]
fn freed_blocks_are_reused_without_page_faults_until_released() {
    use transfer_vision::backend::reuse_freed_memory;
    use transfer_vision::kernels::cpu::buffers::release;

    // By default glibc maps a 64 MiB block afresh each time: one fault per page written (or
    // per huge page where the kernel backs it so).
    let mapped = faults_of_a_fresh_block();
    assert!(reuse_freed_memory(), "glibc took the settings");
    faults_of_a_fresh_block(); // the heap grows once
    let reused = faults_of_a_fresh_block();
    assert!(
        reused < 100,
        "a block freed and allocated again faulted {reused} times (mapped afresh: {mapped})"
    );
    release();
    let after_release = faults_of_a_fresh_block();
    // With 4 KiB pages a fresh 64 MiB block takes 16384 faults; compare where they show.
    if mapped >= 1000 {
        assert!(
            after_release >= mapped / 2,
            "after release a fresh block faulted {after_release} times, against {mapped} before"
        );
    }
}
