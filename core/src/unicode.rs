//! Which characters other software may read as ASCII.
//!
//! Backends normalize Unicode in ways the gateway cannot see: NFKC (Python's `unicodedata`,
//! Java's `Normalizer`, many filesystems and frameworks) turns the fullwidth solidus U+FF0F
//! into `/`, the one dot leader U+2024 into `.` and the fullwidth `Ａ` into `A`; Windows
//! "best-fit" code-page conversion turns the division slash U+2215, which NFKC leaves alone,
//! into `/`. A path holding one of them would be judged as one segment and served as two, as a
//! dot segment, or as `/admin` when the gateway judged `/ａdmin`.

use icu_normalizer::ComposingNormalizerBorrowed;

/// Characters without a compatibility decomposition that best-fit mappings (and people
/// reading a URL) still take for a delimiter or a dot.
const LOOK_ALIKES: &[char] = &[
    '\u{2044}', // FRACTION SLASH
    '\u{2215}', // DIVISION SLASH
    '\u{2216}', // SET MINUS
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F8}', // BIG SOLIDUS
    '\u{29F9}', // BIG REVERSE SOLIDUS
    '\u{3002}', // IDEOGRAPHIC FULL STOP (IDNA maps it to '.')
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{0589}', // ARMENIAN FULL STOP
    '\u{06D4}', // ARABIC FULL STOP
];

/// True when `c` is not ASCII and NFKC or a best-fit mapping turns it into something holding
/// an ASCII character (a separator, a dot, `%`, a letter or a digit). Letters of other scripts
/// (`é`, `ж`, `中`) are their own normal form and pass.
pub fn folds_to_ascii(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    if LOOK_ALIKES.contains(&c) {
        return true;
    }
    let mut buffer = [0u8; 4];
    let folded = ComposingNormalizerBorrowed::new_nfkc().normalize(c.encode_utf8(&mut buffer));
    folded.contains(|f: char| f.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_dots_in_disguise_are_found() {
        for c in [
            '\u{FF0F}', // FULLWIDTH SOLIDUS
            '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
            '\u{FE68}', // SMALL REVERSE SOLIDUS
            '\u{FF0E}', // FULLWIDTH FULL STOP
            '\u{FE52}', // SMALL FULL STOP
            '\u{2024}', // ONE DOT LEADER
            '\u{2025}', // TWO DOT LEADER
            '\u{2026}', // HORIZONTAL ELLIPSIS
            '\u{FF1B}', // FULLWIDTH SEMICOLON
            '\u{FE54}', // SMALL SEMICOLON
            '\u{FF1F}', // FULLWIDTH QUESTION MARK
            '\u{FF03}', // FULLWIDTH NUMBER SIGN
            '\u{FF05}', // FULLWIDTH PERCENT SIGN
            '\u{2488}', // DIGIT ONE FULL STOP ("1.")
            '\u{2215}', // DIVISION SLASH
            '\u{2044}', // FRACTION SLASH
            '\u{FF21}', // FULLWIDTH LATIN CAPITAL LETTER A
            '\u{FF41}', // FULLWIDTH LATIN SMALL LETTER A
            '\u{212A}', // KELVIN SIGN (K)
            '\u{017F}', // LATIN SMALL LETTER LONG S (s)
            '\u{FB01}', // LATIN SMALL LIGATURE FI
            '\u{00B2}', // SUPERSCRIPT TWO
        ] {
            assert!(folds_to_ascii(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn ordinary_letters_are_not() {
        for c in ['/', '.', 'a', 'é', 'ß', 'ж', '中', '\u{00B7}', '\u{0130}'] {
            assert!(!folds_to_ascii(c), "U+{:04X}", u32::from(c));
        }
    }
}
