//! Pull progress: events from the puller, and how `crius image pull` shows them (a bar per
//! layer on a terminal, plain lines otherwise).

use std::collections::BTreeMap;
use std::io::Write;

use super::digest::Digest;

/// One thing that happened during a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to a manifest with this many layers.
    Resolved {
        /// what was asked for.
        reference: String,
        /// the platform manifest.
        manifest: Digest,
        /// number of layers.
        layers: usize,
    },
    /// A layer is already unpacked.
    Cached {
        /// layer digest.
        layer: Digest,
    },
    /// Bytes of a layer arrived (cumulative).
    Bytes {
        /// layer digest.
        layer: Digest,
        /// received so far.
        done: u64,
        /// the layer's size.
        total: u64,
    },
    /// A layer is verified and unpacked.
    Unpacked {
        /// layer digest.
        layer: Digest,
    },
    /// The image is recorded.
    Done {
        /// the image id.
        id: Digest,
    },
}

/// Where the puller sends progress.
pub type ProgressTx = tokio::sync::mpsc::UnboundedSender<Progress>;

/// Renders progress events to a writer.
#[derive(Debug)]
pub struct Renderer<W: Write> {
    out: W,
    terminal: bool,
    layers: BTreeMap<Digest, (u64, u64, &'static str)>,
    drawn: usize,
}

impl<W: Write> Renderer<W> {
    /// `terminal` redraws bars in place; otherwise one line per state change.
    pub fn new(out: W, terminal: bool) -> Renderer<W> {
        Renderer {
            out,
            terminal,
            layers: BTreeMap::new(),
            drawn: 0,
        }
    }

    /// Shows one event.
    pub fn show(&mut self, p: &Progress) -> std::io::Result<()> {
        let short = |d: &Digest| d.hex().get(..12).unwrap_or(d.hex()).to_string();
        match p {
            Progress::Resolved {
                reference,
                manifest,
                layers,
            } => writeln!(
                self.out,
                "{reference}: resolved to {manifest} ({layers} layers)"
            )?,
            Progress::Cached { layer } => {
                self.layers.insert(layer.clone(), (0, 0, "exists"));
                if !self.terminal {
                    writeln!(self.out, "layer {}: already present", short(layer))?;
                }
            }
            Progress::Bytes { layer, done, total } => {
                let first = !self.layers.contains_key(layer);
                self.layers
                    .insert(layer.clone(), (*done, *total, "downloading"));
                if !self.terminal && first {
                    writeln!(
                        self.out,
                        "layer {}: downloading {total} bytes",
                        short(layer)
                    )?;
                }
            }
            Progress::Unpacked { layer } => {
                let e = self.layers.entry(layer.clone()).or_insert((0, 0, ""));
                e.0 = e.1;
                e.2 = "done";
                if !self.terminal {
                    writeln!(self.out, "layer {}: verified and unpacked", short(layer))?;
                }
            }
            Progress::Done { id } => {
                if self.terminal {
                    self.draw()?;
                }
                writeln!(self.out, "image id {id}")?;
                return self.out.flush();
            }
        }
        if self.terminal {
            self.draw()?;
        }
        self.out.flush()
    }

    fn draw(&mut self) -> std::io::Result<()> {
        if self.drawn > 0 {
            write!(self.out, "\x1b[{}A", self.drawn)?;
        }
        for (d, (done, total, state)) in &self.layers {
            let width = 30usize;
            let filled = if *total > 0 {
                ((*done as f64 / *total as f64) * width as f64) as usize
            } else if *state == "downloading" {
                0
            } else {
                width
            };
            let filled = filled.min(width);
            writeln!(
                self.out,
                "\x1b[2K{} [{}{}] {:>7} / {:<7} {state}",
                d.hex().get(..12).unwrap_or(d.hex()),
                "=".repeat(filled),
                " ".repeat(width - filled),
                human(*done),
                human(*total),
            )?;
        }
        self.drawn = self.layers.len();
        Ok(())
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_when_not_a_terminal() {
        let mut buf = Vec::new();
        let l = Digest::of(b"layer");
        {
            let mut r = Renderer::new(&mut buf, false);
            for p in [
                Progress::Bytes {
                    layer: l.clone(),
                    done: 10,
                    total: 20,
                },
                Progress::Bytes {
                    layer: l.clone(),
                    done: 20,
                    total: 20,
                },
                Progress::Unpacked { layer: l.clone() },
                Progress::Done { id: l.clone() },
            ] {
                r.show(&p).expect("write");
            }
        }
        let text = String::from_utf8(buf).expect("utf8");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains('\x1b'));
        assert!(text.contains("downloading 20 bytes"));
        assert_eq!(human(1536), "1.5KiB");
    }
}
