//! Kept output buffers, when asked for: the large tensors the kernels return (activations, their
//! gradients) come back here when the last tensor holding one is dropped, and the next request
//! for the same number of elements takes it instead of fresh memory.
//!
//! Off unless the environment variable `TRANSFER_VISION_KEEP_BUFFERS_MIB` gives how many MiB
//! may be kept (read once per process). Why one would: a freshly allocated buffer of a few MiB
//! is mapped page by page on its first write and given back to the system when freed; a
//! training step writes hundreds of MiB of such buffers, and clearing and mapping those pages
//! took 5–25 % of a step (BENCHMARKS.md: a MobileNetV2 full step 10–30 % faster with 1024).
//! Why it is off: memory kept here is not there for the allocator's other requests, so a step's
//! peak rises (a first full step at batch 32: MobileNetV2 +13 %, ResNet18 +28 % with 1024), and
//! the crate keeps the peak at or below what it was.
//!
//! Reuse is by exact length (a step allocates the same shapes every time). A request that finds
//! none frees kept buffers of at least its size (oldest first), and no more than the given MiB
//! are kept; buffers under [`MIN_ELEMENTS`] are never kept (the allocator's heap serves those
//! without page faults). [`release`] frees everything kept.
//!
//! A wider switch, also off by default: [`reuse_freed_memory`] (or the environment variable
//! `TRANSFER_VISION_REUSE_MEMORY=1`) has glibc keep every block the process frees for its later
//! allocations, burn's included, instead of mapping each large one afresh and unmapping it when
//! freed: MobileNetV2's inference at batch 16 went from 73–79 to 54–60 ms with it (BENCHMARKS.md),
//! as onnxruntime's arena spares it the page faults. The cost: the process does not give that
//! memory back to the system until [`release`].
//!
//! Whether kept or not, fresh memory is never cleared before it is written: the activations,
//! BatchNorm and the depthwise convolutions fill their outputs through [`filled_by_chunks`], the
//! matrix products write theirs in place through [`written_by`]. Fresh buffers of 32 MiB and
//! more are advised to Linux as ones to back by huge pages (see [`HUGE_PAGE_MIN_BYTES`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

/// Buffers with fewer elements than this (256 KiB) are neither kept nor taken from here.
pub const MIN_ELEMENTS: usize = 64 * 1024;

/// The most bytes kept for reuse at once: `TRANSFER_VISION_KEEP_BUFFERS_MIB` MiB, 0 (nothing
/// kept) when it is unset or not a number.
pub fn max_kept_bytes() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("TRANSFER_VISION_KEEP_BUFFERS_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(0, |mib| mib.saturating_mul(1 << 20))
    })
}

/// Whether a buffer of `len` elements would be kept when given back.
pub fn keeps(len: usize) -> bool {
    keeps_within(len, max_kept_bytes())
}

/// Whether a buffer of `len` elements is kept under a limit of `max_bytes`.
fn keeps_within(len: usize, max_bytes: usize) -> bool {
    len >= MIN_ELEMENTS && len.saturating_mul(size_of::<f32>()) <= max_bytes
}

/// Buffers kept for reuse, by length.
#[derive(Default)]
struct Kept {
    /// Buffers of each length, each with the tick it came back at (oldest first).
    by_len: HashMap<usize, Vec<(u64, Vec<f32>)>>,
    /// Bytes held in `by_len`.
    bytes: usize,
    /// Counts returns, to find the oldest buffer.
    tick: u64,
}

impl Kept {
    /// A kept buffer of exactly `len` elements, the most recently returned one. When there is
    /// none, kept buffers of at least `len` elements in all (oldest first) are taken out to be
    /// freed (the second value), so that what is kept does not pile up beside fresh requests.
    fn take(&mut self, len: usize) -> (Option<Vec<f32>>, Vec<Vec<f32>>) {
        if let Some(list) = self.by_len.get_mut(&len)
            && let Some((_, buffer)) = list.pop()
        {
            if list.is_empty() {
                self.by_len.remove(&len);
            }
            self.bytes -= len * size_of::<f32>();
            return (Some(buffer), Vec::new());
        }
        (None, self.evict_oldest(len * size_of::<f32>()))
    }

    /// Keeps `buffer`; returns the oldest buffers taken out to stay within `max_bytes`.
    fn keep(&mut self, buffer: Vec<f32>, max_bytes: usize) -> Vec<Vec<f32>> {
        self.tick += 1;
        let len = buffer.len();
        self.by_len
            .entry(len)
            .or_default()
            .push((self.tick, buffer));
        self.bytes += len * size_of::<f32>();
        let over = self.bytes.saturating_sub(max_bytes);
        self.evict_oldest(over)
    }

    /// Removes the oldest kept buffers until at least `bytes` are removed or none is left.
    fn evict_oldest(&mut self, bytes: usize) -> Vec<Vec<f32>> {
        let mut evicted = Vec::new();
        let mut freed = 0;
        while freed < bytes {
            let oldest = self
                .by_len
                .iter()
                .filter_map(|(len, list)| list.first().map(|(tick, _)| (*tick, *len)))
                .min();
            let Some((_, len)) = oldest else {
                break;
            };
            let Some(list) = self.by_len.get_mut(&len) else {
                break;
            };
            let (_, buffer) = list.remove(0);
            if list.is_empty() {
                self.by_len.remove(&len);
            }
            freed += buffer.len() * size_of::<f32>();
            evicted.push(buffer);
        }
        self.bytes -= freed;
        evicted
    }
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// Runs `f` on the kept buffers; a poisoned lock (a panic elsewhere while holding it) is taken
/// over, since the map is consistent between statements.
fn with_kept<R>(f: impl FnOnce(&mut Kept) -> R) -> R {
    let mut guard = KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(Kept::default))
}

/// A kept buffer of `len` elements, if buffers are kept and one of that length is.
fn take(len: usize) -> Option<Vec<f32>> {
    if !keeps(len) {
        return None;
    }
    let (found, evicted) = with_kept(|kept| kept.take(len));
    // Freed outside the lock.
    drop(evicted);
    found
}

/// Has the C allocator (glibc on Linux) keep the memory the process frees for its later
/// allocations: every block comes from its heap, none is mapped afresh or returned to the system
/// when freed (`mallopt`: no `mmap`ped blocks, no trimming of the heap's top under 2 GiB, and
/// one arena, since a thread's own arena maps any block over 64 MiB whatever the setting). A
/// freshly mapped page is cleared by the kernel and faulted in on its first write: about a
/// quarter of MobileNetV2's inference at batch 16 went there. Process-wide and kept until
/// [`release`]; what is freed stays the process's, so its resident size stays at its peak.
/// Returns whether the allocator took the settings (false off glibc, where nothing changes).
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation policy for later calls; the three
        // settings are documented and in range. It returns 1 on success.
        let set = unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        };
        REUSING.store(set, std::sync::atomic::Ordering::Relaxed);
        set
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Whether [`reuse_freed_memory`] took effect.
static REUSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Calls [`reuse_freed_memory`] once, before the kernels' first large allocation, when the
/// environment variable `TRANSFER_VISION_REUSE_MEMORY` is `1`, `true` or `yes`.
pub(crate) fn reuse_freed_memory_if_asked() {
    static ASKED: OnceLock<()> = OnceLock::new();
    ASKED.get_or_init(|| {
        let asked = std::env::var("TRANSFER_VISION_REUSE_MEMORY")
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        if asked {
            reuse_freed_memory();
        }
    });
}

/// Fewest bytes of a fresh buffer that is asked to be backed by huge pages: glibc's largest
/// dynamic mmap threshold (32 MiB on 64-bit), from which every block is a mapping of its own,
/// returned to the system when freed, so the advice never reaches the heap's reused memory.
pub const HUGE_PAGE_MIN_BYTES: usize = 32 << 20;

/// Room for `len` elements, not initialised. A buffer of [`HUGE_PAGE_MIN_BYTES`] or more is
/// advised to the kernel as one to back by 2 MiB pages (Linux, where transparent huge pages are
/// in `madvise` mode, as on the project's machines): such a buffer is mapped afresh on every
/// call, and faulting it in 4 KiB pages, one fault per page on its first write, was a third of
/// ResNet18's stem convolution at batch 16 (51 MB out; 27–29 → 19–21 ms with the advice).
fn fresh(len: usize) -> Vec<f32> {
    reuse_freed_memory_if_asked();
    let buffer: Vec<f32> = Vec::with_capacity(len);
    advise_if_large(buffer.as_ptr(), len);
    buffer
}

/// Advises huge pages for an allocation of `len` elements at `start` when it is at least
/// [`HUGE_PAGE_MIN_BYTES`] (before anything touched its pages: after `Vec::with_capacity`, or
/// `vec![0.0; len]`, which glibc serves from fresh, already-zero pages at that size).
fn advise_if_large(start: *const f32, len: usize) {
    let bytes = len.saturating_mul(size_of::<f32>());
    if bytes >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(start as usize, bytes);
    }
}

/// Asks for the whole 2 MiB pages inside `[start, start + bytes)` to be huge pages. Advice only:
/// where the kernel has none to give, or transparent huge pages are off, nothing changes.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) & !(HUGE - 1));
    if end > first {
        // SAFETY: `[first, end)` lies inside the allocation just made, which this process owns;
        // MADV_HUGEPAGE changes how its pages are backed, never their contents (they are not
        // written yet). A failure (an old kernel) is harmless and ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: usize, _bytes: usize) {}

/// `len` zeros, in a kept buffer when one of that length is.
pub fn zeroed(len: usize) -> Vec<f32> {
    match take(len) {
        Some(mut buffer) => {
            buffer.fill(0.0);
            buffer
        }
        None => zeros(len),
    }
}

/// `len` fresh zeros (calloc: a large block is fresh pages, already zero and not yet touched),
/// advised as huge pages when large.
fn zeros(len: usize) -> Vec<f32> {
    reuse_freed_memory_if_asked();
    let buffer = vec![0.0; len];
    advise_if_large(buffer.as_ptr(), len);
    buffer
}

/// `len` elements whose values are unspecified (a kept buffer's old contents, or zeros): for a
/// kernel that writes every element before anything reads it.
pub fn to_overwrite(len: usize) -> Vec<f32> {
    // Zeros from calloc, not written here: a large block is fresh pages, faulted in only as the
    // kernel writes them (in parallel), where writing zeros first took a pass of its own.
    let mut buffer = take(len).unwrap_or_else(|| zeros(len));
    // In the crate's unit tests and debug builds, an element a kernel forgot to write shows as
    // NaN rather than as an old value or a plausible zero.
    if cfg!(any(test, debug_assertions)) {
        buffer.fill(f32::NAN);
    }
    buffer
}

/// A buffer of `len` elements written in place by `write`, without being cleared first: for a
/// kernel that writes its output straight into the buffer (a matrix product, a pooling pass)
/// rather than through a staging buffer as [`filled_by_chunks`] does. Fresh memory is lent to
/// `write` uninitialised; a kept buffer of that length is lent with its old contents.
///
/// # Safety
///
/// `write` must write every element of the slice it is lent before it returns (it may read an
/// element only after writing it). In the crate's unit tests and debug builds every element is
/// NaN beforehand, so one it skips shows.
pub unsafe fn written_by(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    if let Some(mut buffer) = take(len) {
        if cfg!(any(test, debug_assertions)) {
            buffer.fill(f32::NAN);
        }
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `write` stores only
        // initialised `f32` values through it, so the buffer stays initialised.
        let view =
            unsafe { &mut *(buffer.as_mut_slice() as *mut [f32] as *mut [MaybeUninit<f32>]) };
        write(view);
        return buffer;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { fresh_written_by(len, write) }
}

/// [`written_by`] on fresh memory, never a kept buffer.
///
/// # Safety
///
/// As for [`written_by`].
unsafe fn fresh_written_by(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut buffer: Vec<f32> = fresh(len);
    let spare = &mut buffer.spare_capacity_mut()[..len];
    if cfg!(any(test, debug_assertions)) {
        spare.fill(MaybeUninit::new(f32::NAN));
    }
    write(spare);
    // SAFETY: the caller's contract: `write` wrote each of the first `len` elements.
    unsafe { buffer.set_len(len) };
    buffer
}

/// Floats in a cache line (64 bytes), the span of one AVX-512 vector.
pub const LINE: usize = 16;

/// Elements from `p` to the next start of a cache line (0 to `LINE - 1`).
pub fn to_line_start(p: *const f32) -> usize {
    (p as usize).wrapping_neg() % (LINE * size_of::<f32>()) / size_of::<f32>()
}

/// `f32`s whose first element starts a cache line, for data the kernels read a vector at a time
/// from offsets that are whole lines (packed weights): a `Vec` is only as aligned as malloc
/// makes it (16 bytes; a large block lies 16 bytes past a page), and then every such load spans
/// two lines. Aligning the 3×3 layers' packed weights made ResNet18's forward passes on them
/// 3–10 % faster (batch 16, 224, 2 cores).
pub struct CacheAligned {
    buffer: Vec<f32>,
    start: usize,
}

impl CacheAligned {
    /// `len` elements on a cache line's start, written in place by `write` (lent
    /// uninitialised; NaN in the crate's unit tests and debug builds, so one it skips shows).
    ///
    /// # Safety
    ///
    /// As for [`written_by`]: `write` must write every element of the slice it is lent.
    pub unsafe fn written_by(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Self {
        let mut buffer: Vec<f32> = Vec::with_capacity(len + LINE - 1);
        let spare = buffer.spare_capacity_mut();
        let start = to_line_start(spare.as_ptr().cast());
        spare[..start].fill(MaybeUninit::new(0.0));
        let out = &mut spare[start..][..len];
        if cfg!(any(test, debug_assertions)) {
            out.fill(MaybeUninit::new(f32::NAN));
        }
        write(out);
        // SAFETY: the `start` elements before were written above, the `len` from `start` by
        // `write` (the caller's contract), all inside the capacity asked for.
        unsafe { buffer.set_len(start + len) };
        Self { buffer, start }
    }
}

impl std::ops::Deref for CacheAligned {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buffer[self.start..]
    }
}

/// The elements of `out`, once every one of them has been written.
///
/// # Safety
///
/// Every element of `out` must be initialised.
pub unsafe fn assume_written(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller vouches that every
    // element is initialised.
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Writes `src` into the start of `out` (`src.len()` elements).
pub fn write_from(out: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (o, &v) in out[..src.len()].iter_mut().zip(src) {
        o.write(v);
    }
}

/// A buffer of `len` elements computed in parallel chunk by chunk: `fill(i, out)` must write
/// every element of `out`, chunk `i` of `chunk` elements (the last one may be shorter).
///
/// Fresh memory is never zero-filled first. `vec![0.0; len]` clears every page it takes from
/// the allocator's heap (glibc serves blocks of up to 32 MiB from there once it has freed one
/// as large), then the kernel writes them again: that clearing was 14 % of a MobileNetV2
/// training step on an Intel Xeon (BENCHMARKS.md). Here each chunk is computed into a small
/// per-thread staging buffer, still in cache, and copied once into the new, uninitialised
/// buffer. A kept buffer of that length (see the module doc) is written in place.
pub fn filled_by_chunks(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    if let Some(mut buffer) = take(len) {
        buffer
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, out)| fill(i, out));
        return buffer;
    }
    let write = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, out)| {
            with_stage(out.len(), |stage| {
                if cfg!(any(test, debug_assertions)) {
                    // An element `fill` forgot to write shows as NaN.
                    stage.fill(f32::NAN);
                }
                fill(i, stage);
                write_from(out, stage);
            })
        })
    };
    // SAFETY: the chunks cover the whole buffer and each is written from a staging buffer of
    // its length.
    unsafe { fresh_written_by(len, write) }
}

thread_local! {
    /// Each thread's staging buffer for [`filled_by_chunks`] (its own, so that a `fill` may use
    /// the kernels' scratch buffers).
    static STAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's staging buffer of exactly `len` elements (contents unspecified),
/// as the kernels' scratch buffers are lent.
fn with_stage<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    super::with_buffer(&STAGE, len, f)
}

/// Keeps `buffer` for a later request of its length when buffers are kept and it is large
/// enough (else frees it); frees the oldest kept buffers beyond [`max_kept_bytes`].
pub fn recycle(buffer: Vec<f32>) {
    let len = buffer.len();
    // Only exact allocations: a request of `len` then holds no hidden spare capacity.
    if !keeps(len) || buffer.capacity() != len {
        return;
    }
    let evicted = with_kept(|kept| kept.keep(buffer, max_kept_bytes()));
    drop(evicted);
}

/// Frees every kept buffer (for a program that is done training and wants the memory back);
/// after [`reuse_freed_memory`], also gives the allocator's free memory back to the system and
/// restores its defaults (large blocks mapped and unmapped again).
pub fn release() {
    let kept = with_kept(std::mem::take);
    drop(kept);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if REUSING.swap(false, std::sync::atomic::Ordering::Relaxed) {
        let arenas = 8 * std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: malloc_trim only returns free heap memory to the system; the mallopt values
        // are glibc's defaults (65536 mapped blocks, a 128 KiB trim threshold, 8 arenas per
        // core on 64-bit).
        unsafe {
            libc::malloc_trim(0);
            libc::mallopt(libc::M_MMAP_MAX, 65536);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
        }
    }
}

/// Bytes kept for reuse right now.
pub fn kept_bytes() -> usize {
    with_kept(|kept| kept.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn cache_aligned_buffers_and_scratch_start_on_a_line_and_hold_what_was_written() {
        // Small (malloc's heap) and large (a mapping of its own, 16 bytes past a page) blocks.
        for len in [1, 15, 16, 17, 1000, MIB] {
            // SAFETY: the closure writes every element it is lent.
            let aligned = unsafe {
                CacheAligned::written_by(len, |out| {
                    for (i, o) in out.iter_mut().enumerate() {
                        o.write(i as f32);
                    }
                })
            };
            assert_eq!(aligned.as_ptr() as usize % 64, 0, "length {len}");
            assert_eq!(aligned.len(), len);
            assert!(aligned.iter().enumerate().all(|(i, &v)| v == i as f32));
            super::super::with_scratch(len, |scratch| {
                assert_eq!((scratch.as_ptr() as usize % 64, scratch.len()), (0, len));
                // Nested: the second buffer, and a fresh one where the first is in use.
                super::super::with_second_scratch(len + 3, |second| {
                    assert_eq!((second.as_ptr() as usize % 64, second.len()), (0, len + 3));
                });
                super::super::with_scratch(len + 5, |fresh| {
                    assert_eq!((fresh.as_ptr() as usize % 64, fresh.len()), (0, len + 5));
                });
            });
        }
    }

    #[test]
    fn buffers_are_reused_by_exact_length_most_recent_first() {
        let mut kept = Kept::default();
        let len = MIN_ELEMENTS + 7;
        let (a, b) = (vec![1.0; len], vec![2.0; len]);
        let b_address = b.as_ptr();
        assert!(kept.keep(a, 64 * MIB).is_empty());
        assert!(kept.keep(b, 64 * MIB).is_empty());
        assert_eq!(kept.bytes, 2 * len * 4);
        let (found, evicted) = kept.take(len);
        let found = found.expect("a kept buffer of that length");
        assert_eq!(found.as_ptr(), b_address, "the most recently kept");
        assert!(evicted.is_empty());
        assert_eq!(kept.bytes, len * 4);
    }

    #[test]
    fn a_miss_frees_the_oldest_kept_buffers_of_at_least_its_size() {
        let mut kept = Kept::default();
        let (small, large) = (MIN_ELEMENTS, 3 * MIN_ELEMENTS);
        kept.keep(vec![0.0; small], 64 * MIB); // oldest
        kept.keep(vec![0.0; small], 64 * MIB);
        kept.keep(vec![0.0; large], 64 * MIB); // newest
        let (found, evicted) = kept.take(2 * MIN_ELEMENTS);
        assert!(found.is_none(), "no buffer of that length");
        assert_eq!(evicted.len(), 2, "the two oldest, together its size");
        assert!(evicted.iter().all(|b| b.len() == small));
        assert_eq!(kept.bytes, large * 4);
    }

    #[test]
    fn no_more_than_the_limit_is_kept() {
        let mut kept = Kept::default();
        let len = MIB / 4; // 1 MiB each
        for _ in 0..3 {
            kept.keep(vec![0.0; len], 2 * MIB);
        }
        assert_eq!(kept.bytes, 2 * MIB, "the oldest freed");
        assert!(
            !keeps_within(MIN_ELEMENTS - 1, 64 * MIB),
            "small buffers are not kept"
        );
        assert!(!keeps_within(len, MIB - 1), "nor one above the limit");
        assert!(!keeps_within(len, 0), "nor any when keeping is off");
    }

    #[test]
    fn chunk_filled_buffers_hold_every_chunk_in_order() {
        // Lengths around the chunk size, a last short chunk, a large one past `MIN_ELEMENTS`.
        for (len, chunk) in [(0, 4), (1, 4), (7, 3), (12, 4), (MIN_ELEMENTS + 5, 1000)] {
            let y = filled_by_chunks(len, chunk, |i, out| {
                for (j, v) in out.iter_mut().enumerate() {
                    *v = (i * chunk + j) as f32;
                }
            });
            assert_eq!(y.len(), len);
            assert!(y.iter().enumerate().all(|(k, &v)| v == k as f32), "{len}");
        }
        // A `fill` that skips an element leaves NaN there in tests.
        let y = filled_by_chunks(10, 5, |_, out| out[1..].fill(1.0));
        assert!(y[0].is_nan() && y[5].is_nan() && y[1] == 1.0);
    }

    #[test]
    fn buffers_written_in_place_hold_what_was_written() {
        // Small, kept-size and huge-page-size buffers (the last advised to the kernel).
        let huge = HUGE_PAGE_MIN_BYTES / size_of::<f32>() + 5;
        for len in [0, 3, MIN_ELEMENTS + 1, huge] {
            // SAFETY: the closure writes every element.
            let y = unsafe {
                written_by(len, |out| {
                    for (i, o) in out.iter_mut().enumerate() {
                        o.write(i as f32);
                    }
                })
            };
            assert_eq!(y.len(), len);
            assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32), "{len}");
        }
        // An element left unwritten shows as NaN in tests (the contract is broken on purpose,
        // which the poisoning makes sound here).
        // SAFETY: in tests every element is NaN before `write` runs.
        let y = unsafe { written_by(4, |out| write_from(&mut out[1..], &[1.0, 2.0, 3.0])) };
        assert!(y[0].is_nan() && y[1..] == [1.0, 2.0, 3.0]);
    }

    #[test]
    fn fresh_buffers_to_overwrite_are_poisoned_in_tests() {
        // Catches a kernel that leaves an element unwritten (the buffer may be a kept one).
        assert!(to_overwrite(MIN_ELEMENTS + 1).iter().all(|v| v.is_nan()));
        assert!(zeroed(MIN_ELEMENTS + 1).iter().all(|&v| v == 0.0));
    }
}
