//! Kernel scratch (im2col and padding buffers, packed activations, LSTM projections) from a
//! pool of f32 buffers: a buffer goes back to its pool when dropped, so once a graph has run,
//! its later runs find every buffer they need and allocate nothing.
//!
//! Each compiled graph has its own pool, installed in its worker threads when they start (so
//! graphs running side by side do not take each other's buffers); code outside any graph's
//! workers (benches, direct kernel calls) uses a process-wide pool.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Buffers kept for reuse per pool; more idle buffers than this are freed.
const MAX_IDLE: usize = 64;

/// Idle buffers and the capacity, in bytes, of every buffer taken from this pool and alive.
#[derive(Default, Debug)]
pub struct ScratchPool {
    idle: Mutex<Vec<Vec<f32>>>,
    held_bytes: AtomicUsize,
}

impl ScratchPool {
    /// Bytes this pool holds (buffers in use and idle).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// The smallest idle buffer that holds `len`, else a new one: growing a smaller buffer
    /// would take it from the requests it fits, which would then allocate in turn.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let fit = idle
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut v = match fit {
            Some(i) => idle.swap_remove(i),
            None => Vec::new(),
        };
        drop(idle);
        if v.capacity() < len {
            v = Vec::with_capacity(len);
            self.held_bytes
                .fetch_add(v.capacity() * 4, Ordering::Relaxed);
        }
        v
    }

    fn give_back(&self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(v);
        } else {
            self.held_bytes
                .fetch_sub(v.capacity() * 4, Ordering::Relaxed);
        }
    }
}

static PROCESS_POOL: LazyLock<Arc<ScratchPool>> = LazyLock::new(Default::default);

thread_local! {
    static THREAD_POOL: RefCell<Option<Arc<ScratchPool>>> = const { RefCell::new(None) };
}

/// Makes `pool` the scratch pool of the calling thread (a graph's worker, at its start).
pub(crate) fn install(pool: Arc<ScratchPool>) {
    THREAD_POOL.with(|p| *p.borrow_mut() = Some(pool));
}

fn current() -> Arc<ScratchPool> {
    THREAD_POOL
        .with(|p| p.borrow().clone())
        .unwrap_or_else(|| PROCESS_POOL.clone())
}

/// A pooled buffer of f32s; returns to the pool it came from on drop.
///
/// Its values start on a 64-byte boundary (`offset` values into `data`): a misaligned
/// buffer makes every zmm load of a packed panel split across two cache lines.
#[derive(Default, Debug)]
pub struct Scratch {
    data: Vec<f32>,
    offset: usize,
    pool: Option<Arc<ScratchPool>>,
}

/// Extra values a buffer holds so that `len` of them fit after its 64-byte boundary.
pub(crate) const ALIGN_SLACK: usize = 64 / 4 - 1;

impl Scratch {
    /// An empty buffer; no pool is touched until it is sized.
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// A buffer of `len` zeros.
    pub fn zeroed(len: usize) -> Scratch {
        let mut s = Scratch::new();
        s.reset_zeroed(len);
        s
    }

    /// Makes this `len` zeros, swapping in a pooled buffer when this one is too small.
    pub fn reset_zeroed(&mut self, len: usize) -> &mut [f32] {
        self.reserve(len);
        self.data.clear();
        self.data.resize(self.offset + len, 0.0);
        &mut self.data[self.offset..]
    }

    /// Makes this `len` values for a caller that writes every one of them: unlike
    /// [`Scratch::reset_zeroed`] it does not clear what a previous use left, here or in the
    /// pooled buffer it swaps in (only values past that buffer's old length are zeroed).
    /// A fresh `Scratch` per run thus costs no pass over its buffer: zeroing ConvTranspose's
    /// column buffers that way took 2.5% of a 2-thread U-Net run.
    pub fn reset_for_overwrite(&mut self, len: usize) -> &mut [f32] {
        self.reserve(len);
        self.data.resize(self.offset + len, 0.0);
        &mut self.data[self.offset..]
    }

    /// Room for `len` values past the 64-byte boundary, from the pool when this buffer is
    /// too small.
    fn reserve(&mut self, len: usize) {
        if self.data.capacity() < len + ALIGN_SLACK {
            let pool = current();
            let old = std::mem::replace(&mut self.data, pool.take(len + ALIGN_SLACK));
            if let Some(p) = self.pool.replace(pool) {
                p.give_back(old);
            }
            // The buffer never moves within its capacity, so neither does the boundary.
            self.offset = self.data.as_ptr().align_offset(64).min(ALIGN_SLACK);
        }
    }
}

impl Clone for Scratch {
    fn clone(&self) -> Scratch {
        let mut s = Scratch::new();
        s.reset_for_overwrite(self.len()).copy_from_slice(self);
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.give_back(std::mem::take(&mut self.data));
        }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.offset..]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.offset..]
    }
}
