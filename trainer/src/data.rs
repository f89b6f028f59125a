//! Data sets: Fashion-MNIST from its IDX files (Debian's `dataset-fashion-mnist` ships them; nothing
//! is downloaded) and two synthetic sets generated from the seed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::rng::Rng;

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// What the model predicts.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Class indices, `classes` of them.
    Classes { labels: Vec<u32>, classes: usize },
    /// One real value per sample.
    Values(Vec<f32>),
}

/// Samples as one row-major matrix, `dim` features each.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub features: Vec<f32>,
    pub dim: usize,
    pub targets: Targets,
}

impl Split {
    pub fn len(&self) -> usize {
        self.features.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    fn take(&self, range: std::ops::Range<usize>) -> Split {
        let targets = match &self.targets {
            Targets::Classes { labels, classes } => {
                Targets::Classes { labels: labels[range.clone()].to_vec(), classes: *classes }
            }
            Targets::Values(v) => Targets::Values(v[range.clone()].to_vec()),
        };
        let features = self.features[range.start * self.dim..range.end * self.dim].to_vec();
        Split { features, dim: self.dim, targets }
    }
}

/// Training, validation (early stopping, the best checkpoint) and test (the reported accuracy).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub validation: Split,
    pub test: Split,
    /// Channels, height, width, for image models.
    pub image: Option<(usize, usize, usize)>,
}

impl Dataset {
    /// `fashion-mnist`, `synthetic-classification`, `synthetic-regression`, or a directory holding
    /// the four Fashion-MNIST / MNIST IDX files (gzipped or not).
    pub fn load(name: &str, seed: u64) -> Result<Self, Error> {
        match name {
            "fashion-mnist" => Self::idx_dir(name, Path::new(FASHION_MNIST_DIR)),
            "synthetic-classification" => Ok(synthetic(name, seed, true)),
            "synthetic-regression" => Ok(synthetic(name, seed, false)),
            path if path.starts_with('/') => Self::idx_dir(name, Path::new(path)),
            other => Err(Error::Config(format!(
                "dataset {other:?}: use fashion-mnist, synthetic-classification, synthetic-regression \
                 or an absolute directory holding IDX files"
            ))),
        }
    }

    fn idx_dir(name: &str, dir: &Path) -> Result<Self, Error> {
        let (images, labels) = (idx(dir, "train-images-idx3-ubyte")?, idx(dir, "train-labels-idx1-ubyte")?);
        let all = image_split(images, labels)?;
        let test = image_split(idx(dir, "t10k-images-idx3-ubyte")?, idx(dir, "t10k-labels-idx1-ubyte")?)?;
        // The last tenth of the training files validates; the test files are only for the
        // reported accuracy.
        let cut = all.len() - all.len() / 10;
        let (h, w) = (28, 28);
        Ok(Self {
            name: name.into(),
            train: all.take(0..cut),
            validation: all.take(cut..all.len()),
            test,
            image: Some((1, h, w)),
        })
    }
}

struct Idx {
    dims: Vec<usize>,
    bytes: Vec<u8>,
}

/// Reads `<dir>/<stem>` or `<dir>/<stem>.gz` (the IDX format of LeCun's MNIST page).
fn idx(dir: &Path, stem: &str) -> Result<Idx, Error> {
    let plain = dir.join(stem);
    let gz = PathBuf::from(format!("{}.gz", plain.display()));
    let mut raw = Vec::new();
    let io = |p: &Path, e: std::io::Error| Error::Data(format!("{}: {e}", p.display()));
    if plain.exists() {
        std::fs::File::open(&plain).and_then(|mut f| f.read_to_end(&mut raw)).map_err(|e| io(&plain, e))?;
    } else {
        let f = std::fs::File::open(&gz).map_err(|e| io(&gz, e))?;
        flate2::read::GzDecoder::new(f).read_to_end(&mut raw).map_err(|e| io(&gz, e))?;
    }
    let bad = |why: &str| Error::Data(format!("{}: {why}", plain.display()));
    if raw.len() < 4 || raw[0] != 0 || raw[1] != 0 || raw[2] != 0x08 {
        return Err(bad("not an IDX file of unsigned bytes"));
    }
    let n = raw[3] as usize;
    let header = 4 + 4 * n;
    let dims: Vec<usize> = (0..n)
        .map(|i| raw.get(4 + 4 * i..8 + 4 * i).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("truncated header"))?;
    if raw.len() != header + dims.iter().product::<usize>() {
        return Err(bad("size does not match its header"));
    }
    raw.drain(..header);
    Ok(Idx { dims, bytes: raw })
}

fn image_split(images: Idx, labels: Idx) -> Result<Split, Error> {
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(Error::Data(format!(
            "IDX files do not pair up: images {:?}, labels {:?}",
            images.dims, labels.dims
        )));
    }
    let dim = images.dims[1] * images.dims[2];
    let features = images.bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
    let labels: Vec<u32> = labels.bytes.iter().map(|&b| u32::from(b)).collect();
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Ok(Split { features, dim, targets: Targets::Classes { labels, classes } })
}

const SYNTHETIC_DIM: usize = 16;
const SYNTHETIC_CLASSES: usize = 4;

/// Gaussian blobs (classification) or a noisy linear function (regression), from the seed.
fn synthetic(name: &str, seed: u64, classify: bool) -> Dataset {
    let mut r = Rng::derive(seed, 0x5EED);
    let centres: Vec<f32> = (0..SYNTHETIC_CLASSES * SYNTHETIC_DIM).map(|_| r.normal() * 2.0).collect();
    let weights: Vec<f32> = (0..SYNTHETIC_DIM).map(|_| r.normal()).collect();
    let mut make = |n: usize| {
        let mut features = Vec::with_capacity(n * SYNTHETIC_DIM);
        let (mut labels, mut values) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let class = (r.next_u64() % SYNTHETIC_CLASSES as u64) as usize;
            let row: Vec<f32> = (0..SYNTHETIC_DIM)
                .map(|d| if classify { centres[class * SYNTHETIC_DIM + d] + r.normal() } else { r.normal() })
                .collect();
            values.push(row.iter().zip(&weights).map(|(x, w)| x * w).sum::<f32>() + 0.1 * r.normal());
            labels.push(class as u32);
            features.extend(row);
        }
        let targets = if classify {
            Targets::Classes { labels, classes: SYNTHETIC_CLASSES }
        } else {
            Targets::Values(values)
        };
        Split { features, dim: SYNTHETIC_DIM, targets }
    };
    let (train, validation, test) = (make(4096), make(512), make(512));
    Dataset { name: name.into(), train, validation, test, image: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_sets_follow_the_seed() {
        let a = Dataset::load("synthetic-classification", 5).unwrap();
        let b = Dataset::load("synthetic-classification", 5).unwrap();
        assert_eq!(a.train, b.train);
        assert_ne!(a.train, Dataset::load("synthetic-classification", 6).unwrap().train);
        assert_eq!((a.train.len(), a.validation.len(), a.train.dim), (4096, 512, 16));
        let r = Dataset::load("synthetic-regression", 5).unwrap();
        assert!(matches!(r.train.targets, Targets::Values(ref v) if v.len() == 4096));
    }

    #[test]
    fn an_unknown_name_says_what_is_accepted() {
        let e = Dataset::load("imagenet", 1).unwrap_err().to_string();
        assert!(e.contains("\"imagenet\"") && e.contains("fashion-mnist"), "{e}");
    }

    #[test]
    fn idx_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |stem: &str, dims: &[u32], body: &[u8]| {
            let mut raw = vec![0, 0, 8, dims.len() as u8];
            dims.iter().for_each(|d| raw.extend(d.to_be_bytes()));
            raw.extend(body);
            std::fs::write(dir.path().join(stem), raw).unwrap();
        };
        write("train-images-idx3-ubyte", &[20, 28, 28], &[255; 20 * 784]);
        write("train-labels-idx1-ubyte", &[20], &[3; 20]);
        write("t10k-images-idx3-ubyte", &[2, 28, 28], &[0; 2 * 784]);
        write("t10k-labels-idx1-ubyte", &[2], &[1, 2]);
        let d = Dataset::load(dir.path().to_str().unwrap(), 0).unwrap();
        assert_eq!((d.train.len(), d.validation.len(), d.test.len()), (18, 2, 2));
        assert_eq!(d.train.features[0], 1.0);
        write("t10k-labels-idx1-ubyte", &[3], &[1, 2]);
        let e = Dataset::load(dir.path().to_str().unwrap(), 0).unwrap_err().to_string();
        assert!(e.contains("t10k-labels-idx1-ubyte: size does not match its header"), "{e}");
    }
}
