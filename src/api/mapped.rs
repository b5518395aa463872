//! Large rendered bodies in memory mapped for them alone.
//!
//! A whole-list render is megabytes (8.6 MB of JSON at 10 000 backups) and is freed by whichever
//! thread drops its last response, rarely the blocking-pool thread that rendered it. mimalloc
//! hands memory freed from another thread back to its owner, which returns the pages only when it
//! next allocates or collects: an idle pool thread kept a dropped render resident for seconds
//! beside the next one (38 MiB instead of 31 at the start of the bench's c=64 cells). A mapping of
//! its own is unmapped by the drop itself, on any thread.

use std::io;

use bytes::Bytes;
use memmap2::MmapMut;

/// Bodies expected to be at least this large are rendered into a mapping; smaller ones into the
/// heap (a mapping costs two system calls and a page at least).
pub const MAPPED_FROM: usize = 1 << 20;

/// A body being written: into the heap when small, into a mapping when large.
pub enum BodyBuf {
    /// Under [`MAPPED_FROM`].
    Heap(Vec<u8>),
    /// From [`MAPPED_FROM`] on.
    Mapped(MappedBody),
}

impl BodyBuf {
    /// Room for about `capacity` bytes, where a body of that size belongs.
    pub fn with_capacity(capacity: usize) -> io::Result<Self> {
        Ok(if capacity < MAPPED_FROM {
            BodyBuf::Heap(Vec::with_capacity(capacity))
        } else {
            BodyBuf::Mapped(MappedBody::with_capacity(capacity)?)
        })
    }

    /// The body written, shared.
    pub fn into_bytes(self) -> Bytes {
        match self {
            BodyBuf::Heap(v) => v.into(),
            BodyBuf::Mapped(m) => m.into_bytes(),
        }
    }
}

impl io::Write for BodyBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BodyBuf::Heap(v) => v.write(buf),
            BodyBuf::Mapped(m) => m.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A body being written into a mapping; [`MappedBody::into_bytes`] shares it.
pub struct MappedBody {
    map: MmapMut,
    len: usize,
}

impl MappedBody {
    /// Room for `capacity` bytes: address space, not memory, until written.
    pub fn with_capacity(capacity: usize) -> io::Result<Self> {
        Ok(MappedBody { map: MmapMut::map_anon(capacity.max(1))?, len: 0 })
    }

    /// The body written, shared; the mapping goes with the last clone.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// Makes room for `needed` bytes in all, at least doubling.
    fn grow(&mut self, needed: usize) -> io::Result<()> {
        let capacity = needed.max(self.map.len() * 2);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: nothing borrows the mapping across this call (it is shared only once
            // written, by `into_bytes`), so moving it invalidates no reference.
            unsafe { self.map.remap(capacity, memmap2::RemapOptions::new().may_move(true)) }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut larger = MmapMut::map_anon(capacity)?;
            larger[..self.len].copy_from_slice(&self.map[..self.len]);
            self.map = larger;
            Ok(())
        }
    }
}

impl io::Write for MappedBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.len + buf.len();
        if end > self.map.len() {
            self.grow(end)?;
        }
        self.map[self.len..end].copy_from_slice(buf);
        self.len = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRef<[u8]> for MappedBody {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_body_grows_past_its_capacity_and_keeps_what_was_written() {
        let mut body = MappedBody::with_capacity(10).unwrap();
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for piece in text.chunks(777) {
            body.write_all(piece).unwrap();
        }
        let bytes = body.into_bytes();
        assert_eq!(bytes, text, "the same bytes after growing 16 times");
        assert_eq!(bytes.slice(4..8), text[4..8]);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_memory_goes_back_when_the_last_clone_is_dropped_on_another_thread() {
        const SIZE: usize = 64 << 20;
        let before = resident_kib();
        let mut body = MappedBody::with_capacity(SIZE + (16 << 20)).unwrap();
        for _ in 0..SIZE / 4096 {
            body.write_all(&[7u8; 4096]).unwrap();
        }
        let bytes = body.into_bytes();
        let clone = bytes.slice(1..2);
        drop(bytes);
        // Other tests run beside this one: compare with margins of many megabytes.
        assert!(resident_kib() > before + 48 * 1024, "written: resident");
        std::thread::spawn(move || drop(clone)).join().unwrap();
        assert!(resident_kib() < before + 16 * 1024, "dropped elsewhere: given back");
    }
}
