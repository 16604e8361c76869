//! The data path's crypto without FUSE: sealing and opening 4 KiB blocks, one at a time and
//! for a 1 MiB request (256 blocks). Compare with `openssl speed -evp aes-256-gcm` on the
//! same machine (scripts/bench-crypto.sh prints both).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cmkfs::crypto::SecretKey;
use cmkfs::format::{ContentCipher, BLOCK_OVERHEAD};

fn bench(c: &mut Criterion) {
    let cipher = ContentCipher::new(&SecretKey::random(), [7; 16]);
    let mut g = c.benchmark_group("block");
    for &size in &[4096usize, 1 << 20] {
        let plain = vec![0x5au8; size];
        let nblocks = size / 4096;
        let mut sealed = vec![0u8; nblocks * (4096 + BLOCK_OVERHEAD as usize)];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| {
                for (i, (p, s)) in plain
                    .chunks(4096)
                    .zip(sealed.chunks_mut(4096 + BLOCK_OVERHEAD as usize))
                    .enumerate()
                {
                    cipher.seal_block(i as u64, p, s);
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("seal-request", size), &size, |b, _| {
            // As the write path does it: all nonces of the request from one getrandom call.
            b.iter(|| {
                let mut nonces = vec![0u8; 12 * nblocks];
                cmkfs::crypto::fill_random(&mut nonces);
                for (i, (p, s)) in plain
                    .chunks(4096)
                    .zip(sealed.chunks_mut(4096 + BLOCK_OVERHEAD as usize))
                    .enumerate()
                {
                    cipher.seal_block_with_nonce(i as u64, nonces[12 * i..][..12].try_into().unwrap(), p, s);
                }
            })
        });
        let mut out = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| {
                for (i, (s, o)) in sealed
                    .chunks(4096 + BLOCK_OVERHEAD as usize)
                    .zip(out.chunks_mut(4096))
                    .enumerate()
                {
                    cipher.open_block(i as u64, s, o).unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
