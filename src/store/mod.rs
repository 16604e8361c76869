//! Block I/O: carries out what the format's layout plans describe on a backing file.
//!
//! The format (`crate::format::layout`) is pure: it says where blocks, entries and holes are
//! and seals and opens buffers. This module does the `pread`s and `pwrite`s around it, in
//! the order the layout's crash guarantees need (layout 2: entries before ciphertext), and
//! holds the other on-disk state of a mount that is not a file's content:
//!
//! - [`session`]: the writer session stamps (markers in the cipher root) that layout 2's slot
//!   choice needs, handed to writers explicitly as [`WriterStamps`].
//! - [`journal`]: the rekey journals that make replacing a file's DEK crash-safe.
//! - [`root`]: the cipher directory's root as untrusted input, reached through one
//!   directory descriptor (every file cmkfs keeps there goes through it), and the root's
//!   shown mode and owner ([`root::RootAttr`]).

pub mod journal;
pub mod names;
pub mod root;
pub mod session;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::format::content::{is_zero, BlockError, ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE};
use crate::format::layout::{v1, v2, BlockRead, Entry, Layout, WritePlan, WriterStamps};
use crate::sys;
use crate::sys::read_full_at;

const BS: u64 = BLOCK_SIZE;
const OVH: usize = BLOCK_OVERHEAD as usize;
/// The most entry bytes an entry page holds (layout 2: 62 x 64, layout 3: 45 x 88).
const GROUP_ENTRIES: usize = (v2::PAGE - v2::ENTRY_AREA) as usize;
/// Zeros for an entry page's worth of entries (holes).
const ZERO_ENTRIES: [u8; GROUP_ENTRIES] = [0u8; GROUP_ENTRIES];

/// Why a run of blocks could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The backing file could not be read.
    Io(io::Error),
    /// The backing file ends before block `.0` does.
    Short(u64),
    /// Block `.0` failed authentication.
    Bad(u64, BlockError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads `buf.len()` bytes at `off`; what lies past the end of the file reads as zeros.
fn read_or_zero(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let n = read_full_at(f, buf, off)?;
    buf[n..].fill(0);
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `off`, or [`ReadError::Short`] naming block `b`.
fn read_exact(f: &File, buf: &mut [u8], off: u64, b: u64) -> Result<(), ReadError> {
    if read_full_at(f, buf, off)? < buf.len() {
        return Err(ReadError::Short(b));
    }
    Ok(())
}

/// The encrypted content of one backing file, in its volume's layout.
#[derive(Clone, Copy)]
pub struct Backing<'a> {
    file: &'a File,
    layout: Layout,
}

impl<'a> Backing<'a> {
    /// The content of `file`, laid out as `layout`.
    pub fn new(file: &'a File, layout: Layout) -> Self {
        Backing { file, layout }
    }

    /// Reads and opens the blocks that `out` covers, starting at block `first`
    /// (`out.len()` is `min(size, end of the last block) - first*4096`).
    pub fn read_run(self, c: &ContentCipher, first: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        if out.is_empty() {
            return Ok(());
        }
        let f = self.file;
        let nb = (out.len() as u64).div_ceil(BS);
        let last = first + nb - 1;
        match self.layout {
            Layout::V1 => {
                let (cstart, cend) = v1::run_span(first, last, out.len() - ((nb - 1) * BS) as usize);
                let mut stored = vec![0u8; (cend - cstart) as usize];
                read_exact(f, &mut stored, cstart, last)?;
                v1::open_run(c, first, &stored, out).map_err(|(b, e)| ReadError::Bad(b, e))
            }
            Layout::V2 | Layout::V3 => {
                // Group by group: one read of the entries, one of the ciphertext pages (read
                // straight into `out` and opened in place).
                let mut ents = [0u8; GROUP_ENTRIES];
                let mut b = first;
                while b <= last {
                    let gl = last.min(g.group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(f, &mut ents[..n * el], g.entry_offset(b))?;
                    let o0 = ((b - first) * BS) as usize;
                    let o1 = (((gl + 1 - first) * BS) as usize).min(out.len());
                    read_exact(f, &mut out[o0..o1], g.data_offset(b), gl)?;
                    for k in 0..n {
                        let p0 = o0 + k * BS as usize;
                        let p1 = (p0 + BS as usize).min(o1);
                        self.open_v2(c, b + k as u64, &g.parse(&ents[k * el..][..el]), &mut out[p0..p1])?;
                    }
                    b = gl + 1;
                }
                Ok(())
            }
        }
    }

    /// Reads and opens block `b`, whose plaintext length is `len`, into `out[..len]`.
    pub fn read_block(self, c: &ContentCipher, b: u64, len: usize, out: &mut [u8]) -> Result<BlockRead, ReadError> {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        let out = &mut out[..len];
        match self.layout {
            Layout::V1 => {
                let mut stored = vec![0u8; len + OVH];
                read_exact(self.file, &mut stored, v1::block_offset(b), b)?;
                if v1::is_hole(&stored) {
                    out.fill(0);
                    return Ok(BlockRead::Hole);
                }
                c.open_block(b, &stored, out).map_err(|e| ReadError::Bad(b, e))?;
                Ok(BlockRead::Data)
            }
            Layout::V2 | Layout::V3 => {
                let mut ent = [0u8; 128];
                let ent = &mut ent[..el];
                read_or_zero(self.file, ent, g.entry_offset(b))?;
                read_exact(self.file, out, g.data_offset(b), b)?;
                self.open_v2(c, b, &g.parse(ent), out)
            }
        }
    }

    /// Layout 2: opens block `b` in place in `buf` (its ciphertext) with entry `e`: the
    /// current slot, else the other one, after reading the ciphertext again when the failed
    /// attempt left `buf` unspecified.
    fn open_v2(self, c: &ContentCipher, b: u64, e: &Entry, buf: &mut [u8]) -> Result<BlockRead, ReadError> {
        let g = self.layout.geo();
        match v2::open_current(c, b, e, buf) {
            Ok(r) => Ok(r),
            Err(v2::TryPrevious { reread }) => {
                if reread {
                    read_exact(self.file, buf, g.data_offset(b), b)?;
                }
                v2::open_previous(c, b, e, buf).map_err(|x| ReadError::Bad(b, x))
            }
        }
    }

    /// Seals and writes a planned run whose bodies the caller has filled: reads the entries
    /// the plan needs, checks suspect ones, seals, and writes entries before ciphertext.
    /// The plan's plaintext is wiped if anything fails before sealing.
    pub fn write(self, c: &ContentCipher, stamps: &WriterStamps, plan: &mut WritePlan) -> io::Result<()> {
        let f = self.file;
        if let Err(e) = self.prepare(c, stamps, plan) {
            plan.zeroize();
            return Err(e);
        }
        plan.seal(c, stamps);
        if let Some((off, ents)) = plan.entries() {
            f.write_all_at(ents, off)?;
            crate::util::crash_point("layout:entries-written");
        }
        let (off, data) = plan.data();
        if let Err(err) = f.write_all_at(data, off) {
            for (off, ents) in plan.mark_unsure() {
                let _ = f.write_all_at(ents, off);
            }
            return Err(err);
        }
        Ok(())
    }

    /// Reads the plan's entries and finds which slot of each suspect entry authenticates the
    /// ciphertext on disk.
    fn prepare(self, c: &ContentCipher, stamps: &WriterStamps, plan: &mut WritePlan) -> io::Result<()> {
        let g = self.layout.geo();
        for (off, region) in plan.entry_regions() {
            read_or_zero(self.file, region, off)?;
        }
        for (b, e, len) in plan.suspects(stamps) {
            let mut ct = zeroize::Zeroizing::new(vec![0u8; len]);
            let mut found = None;
            for s in v2::filled_slots(&e) {
                if read_full_at(self.file, &mut ct, g.data_offset(b))? < len {
                    break;
                }
                if v2::slot_opens(c, b, &e, s, &mut ct) {
                    found = Some(s);
                    break;
                }
            }
            plan.set_verified(b, found);
        }
        Ok(())
    }

    /// Makes blocks `first..end` holes (`clen` is the backing length).
    pub fn punch(self, first: u64, end: u64, clen: u64) -> io::Result<()> {
        for p in self.layout.punch(first, end) {
            if let Some((off, len)) = p.zero {
                self.file.write_all_at(&ZERO_ENTRIES[..len], off)?;
            }
            let (s, e) = (p.dealloc.0, p.dealloc.1.min(clen));
            if e > s {
                sys::fallocate(
                    self.file.as_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    s,
                    e - s,
                )?;
            }
        }
        Ok(())
    }

    /// Layout 2: zeroes the entries past `nblocks` left in the last entry page (see
    /// [`Layout::stale_entries`]). Reads first and writes only if something is there.
    pub fn clear_entries_past(self, nblocks: u64, clen: u64) -> io::Result<()> {
        let Some((off, n, len)) = self.layout.stale_entries(nblocks, clen) else {
            return Ok(());
        };
        let mut ents = [0u8; GROUP_ENTRIES];
        read_or_zero(self.file, &mut ents[..n], off)?;
        if !is_zero(&ents[..n]) {
            self.file.write_all_at(&ZERO_ENTRIES[..len], off)?;
        }
        Ok(())
    }

    /// The first block in `from..nblocks` holding data (not a hole), if any. A block is a
    /// hole by the same rule reads use, so results agree with what reads return.
    pub fn next_data(self, from: u64, nblocks: u64, clen: u64) -> io::Result<Option<u64>> {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        let fd = self.file.as_fd();
        let mut b = from;
        match self.layout {
            Layout::V1 => loop {
                if b >= nblocks {
                    return Ok(None);
                }
                let d = match sys::lseek(fd, v1::block_offset(b), libc::SEEK_DATA)? {
                    Some(d) if d < clen => d,
                    _ => return Ok(None),
                };
                let db = v1::block_at(d).max(b);
                if db >= nblocks {
                    return Ok(None);
                }
                if !self.v1_is_hole(db, clen)? {
                    return Ok(Some(db));
                }
                b = db + 1;
            },
            Layout::V2 | Layout::V3 => {
                let mut ents = [0u8; GROUP_ENTRIES];
                while b < nblocks {
                    // Skip groups whose entry page is a backing hole.
                    match sys::lseek(fd, g.group_offset(g.group(b).0), libc::SEEK_DATA)? {
                        Some(d) if d < clen => {
                            let dg = d / v2::PAGE / g.group_pages();
                            if dg > g.group(b).0 {
                                b = dg * g.group_blocks();
                                continue;
                            }
                        }
                        _ => return Ok(None),
                    }
                    let gl = (nblocks - 1).min(g.group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(self.file, &mut ents[..n * el], g.entry_offset(b))?;
                    if let Some(k) = (0..n).find(|&k| !g.parse(&ents[k * el..][..el]).is_hole()) {
                        return Ok(Some(b + k as u64));
                    }
                    b = gl + 1;
                }
                Ok(None)
            }
        }
    }

    /// The first hole in `from..nblocks`, or `nblocks` when there is none.
    pub fn next_hole(self, from: u64, nblocks: u64, clen: u64) -> io::Result<u64> {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        let mut b = from;
        match self.layout {
            Layout::V1 => loop {
                if b >= nblocks {
                    return Ok(nblocks);
                }
                if self.v1_is_hole(b, clen)? {
                    return Ok(b);
                }
                match sys::lseek(self.file.as_fd(), v1::block_offset(b), libc::SEEK_HOLE)? {
                    Some(h) if h < clen => b = v1::block_at(h).max(b + 1),
                    _ => return Ok(nblocks),
                }
            },
            Layout::V2 | Layout::V3 => {
                let mut ents = [0u8; GROUP_ENTRIES];
                while b < nblocks {
                    let gl = (nblocks - 1).min(g.group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(self.file, &mut ents[..n * el], g.entry_offset(b))?;
                    if let Some(k) = (0..n).find(|&k| g.parse(&ents[k * el..][..el]).is_hole()) {
                        return Ok(b + k as u64);
                    }
                    b = gl + 1;
                }
                Ok(nblocks)
            }
        }
    }

    /// Layout 1: a block is a hole when its stored range is a backing hole or all zeros.
    fn v1_is_hole(self, b: u64, clen: u64) -> io::Result<bool> {
        let (s, e) = (v1::block_offset(b), v1::block_offset(b + 1).min(clen));
        if s >= e {
            return Ok(true);
        }
        match sys::lseek(self.file.as_fd(), s, libc::SEEK_DATA)? {
            None => Ok(true),
            Some(d) if d >= e => Ok(true),
            Some(_) => {
                let mut buf = vec![0u8; (e - s) as usize];
                let n = read_full_at(self.file, &mut buf, s)?;
                Ok(v1::is_hole(&buf[..n]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    const PAGE: usize = v2::PAGE as usize;

    /// Writes blocks `0..n` of a file whose size goes from `old_size` to `n` full blocks.
    fn write(
        f: &File,
        c: &ContentCipher,
        stamps: &WriterStamps,
        n: u64,
        old_size: u64,
        content: impl Fn(u64) -> Vec<u8>,
    ) {
        let mut plan = Layout::V2.plan_write(0, n - 1, n * BS, old_size);
        for b in plan.blocks() {
            plan.body_mut(b).copy_from_slice(&content(b));
        }
        Backing::new(f, Layout::V2).write(c, stamps, &mut plan).unwrap();
    }

    /// Every mix of old and new ciphertext pages under the new entries (what a writer killed
    /// between pages leaves) reads block by block as old or new, matching the page.
    #[test]
    fn any_mix_of_landed_pages_reads_old_or_new() {
        let c = ContentCipher::new(&SecretKey::random(), [1; 16]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        const N: u64 = 200; // four groups
        let content =
            |v: u8| move |b: u64| -> Vec<u8> { (0..BS).map(|i| (i as u8) ^ (b as u8) ^ v.wrapping_mul(77)).collect() };
        let stamps = WriterStamps::default();
        write(&f, &c, &stamps, N, 0, content(0));
        let s0 = std::fs::read(&path).unwrap();
        write(&f, &c, &stamps, N, N * BS, content(1));
        let s1 = std::fs::read(&path).unwrap();
        assert_eq!(s0.len(), s1.len());
        let backing = Backing::new(&f, Layout::V2);
        let mut rng = 0x1234_5678_9abc_def1u64;
        for round in 0..20 {
            let mut mixed = s1.clone();
            let mut new = vec![];
            for b in 0..N {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let landed = round == 0 || rng % 2 == 0;
                if !landed {
                    let o = v2::GEO2.data_offset(b) as usize;
                    mixed[o..o + PAGE].copy_from_slice(&s0[o..o + PAGE]);
                }
                new.push(landed);
            }
            f.write_all_at(&mixed, 0).unwrap();
            let mut out = vec![0u8; BS as usize];
            for b in 0..N {
                let r = backing.read_block(&c, b, BS as usize, &mut out).unwrap();
                let v = if new[b as usize] { 1 } else { 0 };
                assert_eq!(out, content(v)(b), "round {round} block {b}");
                assert_eq!(r, if v == 1 { BlockRead::Data } else { BlockRead::Previous });
            }
            let mut all = vec![0u8; (N * BS) as usize];
            backing.read_run(&c, 0, &mut all).unwrap();
            for b in 0..N {
                let v = if new[b as usize] { 1 } else { 0 };
                assert_eq!(&all[(b * BS) as usize..][..BS as usize], &content(v)(b)[..]);
            }
        }
        // The first write's entries with its pages: the old content.
        f.write_all_at(&s0, 0).unwrap();
        let mut out = vec![0u8; BS as usize];
        assert_eq!(
            backing.read_block(&c, 7, BS as usize, &mut out).unwrap(),
            BlockRead::Data
        );
        assert_eq!(out, content(0)(7));
        // A flipped bit in a page fails both slots: EIO, never plaintext.
        let mut bad = s1.clone();
        bad[v2::GEO2.data_offset(5) as usize + 9] ^= 4;
        f.write_all_at(&bad, 0).unwrap();
        assert!(matches!(
            backing.read_block(&c, 5, BS as usize, &mut out),
            Err(ReadError::Bad(5, BlockError::Auth))
        ));
        assert!(out.iter().all(|&x| x == 0), "no plaintext left behind on failure");
    }

    /// After a crash between a write's entries and its pages, the next session (which sees
    /// the crashed one's stamp) checks the entry before overwriting it, so a second
    /// interrupted write still leaves the original content readable.
    #[test]
    fn a_crashed_sessions_entry_is_checked_before_its_slot_is_reused() {
        let c = ContentCipher::new(&SecretKey::random(), [2; 16]);
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        let blk = |v: u8| move |_: u64| vec![v; BS as usize];
        let crashed = WriterStamps {
            own: 7,
            crashed: vec![],
        };
        write(&f, &c, &crashed, 1, 0, blk(1));
        let page = v2::GEO2.data_offset(0);
        let mut original = vec![0u8; PAGE];
        f.read_exact_at(&mut original, page).unwrap();
        // Session 7 writes again but dies after the entries: its new slot is current and does
        // not match the page.
        write(&f, &c, &crashed, 1, BS, blk(2));
        f.write_all_at(&original, page).unwrap();
        // Session 8 knows 7 crashed: it must not overwrite the slot that still authenticates
        // the page. It too dies after its entries.
        let next = WriterStamps {
            own: 8,
            crashed: vec![7],
        };
        write(&f, &c, &next, 1, BS, blk(3));
        f.write_all_at(&original, page).unwrap();
        let mut out = vec![0u8; BS as usize];
        let r = Backing::new(&f, Layout::V2)
            .read_block(&c, 0, BS as usize, &mut out)
            .unwrap();
        assert_eq!((r, &out), (BlockRead::Previous, &vec![1u8; BS as usize]));
        // Without the check (7 not known to have crashed) the original would be lost.
        let blind = WriterStamps {
            own: 9,
            crashed: vec![],
        };
        write(&f, &c, &blind, 1, BS, blk(4));
        f.write_all_at(&original, page).unwrap();
        assert!(Backing::new(&f, Layout::V2)
            .read_block(&c, 0, BS as usize, &mut out)
            .is_err());
    }
}
