//! How a multipart upload cuts a stream of unknown length: parts grow with their number so
//! that S3's 10,000 parts hold multi-terabyte dumps, and a part too large to hold in memory is
//! spooled to an anonymous temporary file (removed when closed, even if Nova is killed).

use std::io::SeekFrom;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::store::StoreError;

/// S3's limit on parts per upload.
pub const MAX_PARTS: u32 = 10_000;
const MIB: u64 = 1 << 20;

/// The size of part `n` (from 1): 8 MiB up to part 2,000 (16 GiB), 16 MiB up to 4,000, 32 MiB
/// up to 6,000, 256 MiB up to 8,000, then 4 GiB (S3 allows 5): 10,000 parts hold about
/// 8.6 TB, and a small dump is still cut into small parts.
pub fn part_size(n: u32) -> u64 {
    match n {
        0..=2000 => 8 * MIB,
        2001..=4000 => 16 * MIB,
        4001..=6000 => 32 * MIB,
        6001..=8000 => 256 * MIB,
        _ => 4096 * MIB,
    }
}

/// The sizes of an upload's parts and the largest one kept in memory.
#[derive(Clone, Copy, Debug)]
pub struct PartPlan {
    pub size: fn(u32) -> u64,
    pub in_memory_up_to: u64,
}

/// What uploads use: parts up to 32 MiB in memory (one at a time), larger ones on disk.
pub const PARTS: PartPlan = PartPlan { size: part_size, in_memory_up_to: 32 * MIB };

/// One part, read from the stream.
pub enum Part {
    Memory(Vec<u8>),
    Spooled { file: tokio::fs::File, len: u64 },
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Memory(b) => b.len() as u64,
            Part::Spooled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The request body, with its length (S3 wants Content-Length, not chunked bodies).
    pub fn body(self) -> (reqwest::Body, u64) {
        let len = self.len();
        let body = match self {
            Part::Memory(b) => reqwest::Body::from(b),
            Part::Spooled { file, .. } => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file)),
        };
        (body, len)
    }
}

fn reading(e: std::io::Error) -> StoreError {
    StoreError::S3(format!("reading the data to upload: {e}"))
}

impl PartPlan {
    /// Reads part `n`: its full size, or less only at the end of `body`.
    pub async fn read<R: AsyncRead + Unpin>(&self, body: &mut R, n: u32) -> Result<Part, StoreError> {
        let size = (self.size)(n);
        if size <= self.in_memory_up_to {
            let mut buf = Vec::with_capacity(size as usize);
            (&mut *body).take(size).read_to_end(&mut buf).await.map_err(reading)?;
            return Ok(Part::Memory(buf));
        }
        let spool = tempfile::tempfile()
            .map_err(|e| StoreError::S3(format!("a temporary file for part {n} ({size} bytes): {e}")))?;
        let mut file = tokio::fs::File::from_std(spool);
        let len = tokio::io::copy(&mut (&mut *body).take(size), &mut file).await.map_err(|e| {
            StoreError::S3(format!(
                "spooling part {n} ({size} bytes) to a temporary file: {e} (parts above 32 MiB go to \
                 $TMPDIR, /tmp by default; the chart's tmp.sizeLimit sizes it)"
            ))
        })?;
        file.seek(SeekFrom::Start(0)).await.map_err(reading)?;
        Ok(Part::Spooled { file, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_terabytes_within_s3_limits_and_start_small() {
        let total: u64 = (1..=MAX_PARTS).map(part_size).sum();
        assert!(total > 8_000_000_000_000, "{total}");
        assert!((1..=MAX_PARTS).all(|n| (5 * MIB..=5 * 1024 * MIB).contains(&part_size(n))));
        // The first 16 GiB go in 8 MiB parts, all of them in memory.
        assert!((1..=2000).all(|n| part_size(n) == 8 * MIB && part_size(n) <= PARTS.in_memory_up_to));
    }

    #[tokio::test]
    async fn large_parts_go_through_a_file_and_come_back_whole() {
        let plan = PartPlan { size: |n| if n == 1 { 3 } else { 5 }, in_memory_up_to: 4 };
        let data: Vec<u8> = (0..12u8).collect();
        let mut body = &data[..];
        let mut got = Vec::new();
        let mut kinds = Vec::new();
        for n in 1.. {
            let part = plan.read(&mut body, n).await.unwrap();
            if part.is_empty() {
                break;
            }
            kinds.push(matches!(part, Part::Spooled { .. }));
            match part {
                Part::Memory(b) => got.extend(b),
                Part::Spooled { mut file, len } => {
                    let mut b = Vec::new();
                    file.read_to_end(&mut b).await.unwrap();
                    assert_eq!(b.len() as u64, len);
                    got.extend(b);
                }
            }
        }
        assert_eq!(got, data);
        assert_eq!(kinds, [false, true, true]);
    }
}
