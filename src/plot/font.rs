//! The font the plots' text is drawn with. plotters measures and draws text with a TrueType
//! font registered at run time (its `ab_glyph` feature: no system libraries needed), so
//! agora looks for one the machine has: `AGORA_FONT`, then the usual places on Linux, macOS
//! and Windows (DejaVu Sans and Liberation Sans come with most Linux distributions; `apt-get
//! install fonts-dejavu-core` adds one).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name charts ask for.
pub const FAMILY: &str = "sans-serif";

const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a font once per process; the error says what to do when there is none.
pub fn ensure() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = find().ok_or_else(|| {
                "no TrueType font found to draw the plots' text with: install one (Debian and \
                 Ubuntu: apt-get install fonts-dejavu-core) or set AGORA_FONT to a .ttf file"
                    .to_string()
            })?;
            let bytes =
                std::fs::read(&path).map_err(|e| format!("reading the font {}: {e}", path.display()))?;
            // Registered fonts live as long as the process: leaking the one file is the API.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font agora can read", path.display()))?;
            Ok(path)
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AGORA_FONT") {
        return Some(PathBuf::from(path));
    }
    if let Some(found) = CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(found);
    }
    // Any sans font under the usual roots, a few levels down.
    ["/usr/share/fonts", "/usr/local/share/fonts"]
        .iter()
        .find_map(|root| search(Path::new(root), 4))
}

fn search(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    entries.sort();
    let is_sans = |p: &Path| {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        name.ends_with(".ttf") && name.contains("sans") && !name.contains("bold") && !name.contains("oblique")
    };
    if let Some(found) = entries.iter().find(|p| p.is_file() && is_sans(p)) {
        return Some(found.clone());
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| search(p, depth - 1))
}
