//! Text decoding per Specific Character Set (0008,0005).
//!
//! PS3.5 section 6.1 and PS3.3 section C.12.1.1.2. A Specific Character Set
//! value is either a single stand-alone character set (`ISO_IR 192`,
//! `GB18030`, `GBK`), a single-byte set without code extensions
//! (`ISO_IR 100`, ...), or a list of ISO 2022 sets (`ISO 2022 IR 6\ISO 2022
//! IR 87`) between which the text switches with escape sequences. Value 1 (or
//! the default repertoire when it is empty) is the set active at the start of
//! a value and again after every delimiter (PS3.5 section 6.1.2.5.3).
//!
//! Decoding never fails: bytes that are not valid in the active set become
//! U+FFFD, unknown character set names fall back to ISO-8859-1.

use std::sync::OnceLock;

use dicom_encoding::text::{
    GBKCharacterSetCodec, Gb18030CharacterSetCodec, IsoIr101CharacterSetCodec,
    IsoIr109CharacterSetCodec, IsoIr110CharacterSetCodec, IsoIr126CharacterSetCodec,
    IsoIr127CharacterSetCodec, IsoIr138CharacterSetCodec, IsoIr13CharacterSetCodec,
    IsoIr144CharacterSetCodec, IsoIr149CharacterSetCodec, IsoIr166CharacterSetCodec,
    IsoIr87CharacterSetCodec, TextCodec,
};

const ESC: u8 = 0x1B;

/// Delimiters after which the character set of value 1 is active again in any
/// text value: CR, LF, TAB, FF and the value separator `\`.
const TEXT_DELIMITERS: &[u8] = b"\r\n\t\x0c\\";
/// Person Name values also reset at the component (`^`) and component group
/// (`=`) delimiters.
const PN_DELIMITERS: &[u8] = b"\r\n\t\x0c\\^=";

/// Decodes text bytes per the Specific Character Set value (e.g. "",
/// "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", multi-valued with
/// backslash). Falls back to lossy ISO-8859-1/UTF-8 and never fails.
///
/// Padding is not trimmed here; see [`crate::scan::ScannedAttributes::text`].
pub fn decode_text(bytes: &[u8], specific_character_set: Option<&str>) -> String {
    decode_with_delimiters(bytes, specific_character_set, TEXT_DELIMITERS)
}

/// Like [`decode_text`], for a Person Name (PN) value: with ISO 2022 code
/// extensions the character set of value 1 is also re-established after each
/// `^` and `=` delimiter.
pub fn decode_person_name(bytes: &[u8], specific_character_set: Option<&str>) -> String {
    decode_with_delimiters(bytes, specific_character_set, PN_DELIMITERS)
}

fn decode_with_delimiters(bytes: &[u8], scs: Option<&str>, delimiters: &[u8]) -> String {
    match Scheme::from_specific_character_set(scs.unwrap_or("")) {
        Scheme::Whole(codec) => codec.decode(bytes),
        Scheme::Iso2022(initial) => {
            if bytes.is_ascii() && !bytes.contains(&ESC) {
                // Fast path: pure ASCII without code extensions is the same
                // in every ISO 2022 based set DICOM allows (JIS X 0201
                // roman is decoded as ASCII too, like other toolkits do).
                return String::from_utf8(bytes.to_vec()).expect("ASCII is UTF-8");
            }
            decode_iso2022(bytes, initial, delimiters)
        }
    }
}

/// How a whole value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// A stand-alone set that cannot be used with code extensions.
    Whole(Multi),
    /// ISO 2022 processing starting (and resetting to) this state.
    Iso2022(State),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    g0: G0,
    g1: G1,
}

/// The 94-character set invoked in GL (bytes 0x21-0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    /// ISO-IR 6.
    Ascii,
    /// ISO-IR 14, JIS X 0201 roman (decoded as ASCII).
    Romaji,
    /// ISO-IR 87, JIS X 0208 (two bytes per character).
    Jis0208,
    /// ISO-IR 159, JIS X 0212 (two bytes per character).
    Jis0212,
}

/// The set invoked in GR (bytes 0xA0-0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    Single(SingleByte),
    /// ISO-IR 13, JIS X 0201 katakana.
    Katakana,
    /// ISO-IR 149, KS X 1001 (two bytes per character).
    Ksx1001,
    /// ISO-IR 58, GB 2312 (two bytes per character).
    Gb2312,
}

/// Single-byte sets: ASCII in the lower half, the set in the upper half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SingleByte {
    /// ISO-IR 100 (ISO-8859-1); also the fallback for the default repertoire.
    Latin1,
    /// ISO-IR 101 (ISO-8859-2).
    Latin2,
    /// ISO-IR 109 (ISO-8859-3).
    Latin3,
    /// ISO-IR 110 (ISO-8859-4).
    Latin4,
    /// ISO-IR 144 (ISO-8859-5).
    Cyrillic,
    /// ISO-IR 127 (ISO-8859-6).
    Arabic,
    /// ISO-IR 126 (ISO-8859-7).
    Greek,
    /// ISO-IR 138 (ISO-8859-8).
    Hebrew,
    /// ISO-IR 148 (ISO-8859-9).
    Latin5,
    /// ISO-IR 166 (TIS 620-2533).
    Thai,
}

/// Multi-byte (or stand-alone) encodings decoded as a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multi {
    Utf8,
    Gb18030,
    Gbk,
    ShiftJis,
    EucKr,
    Iso2022Jp,
}

const DEFAULT_STATE: State = State {
    g0: G0::Ascii,
    g1: G1::Single(SingleByte::Latin1),
};

impl Scheme {
    fn from_specific_character_set(scs: &str) -> Scheme {
        // Only value 1 matters for the initial state: the other values merely
        // declare which sets escape sequences may designate, and every escape
        // sequence this decoder knows is honoured.
        let first = scs.split('\\').next().unwrap_or("");
        match Term::parse(first) {
            Term::Whole(m) => Scheme::Whole(m),
            Term::Initial(state) => Scheme::Iso2022(state),
        }
    }
}

enum Term {
    Whole(Multi),
    Initial(State),
}

impl Term {
    /// Parses one value of Specific Character Set, leniently: case, spaces,
    /// `_` and `-` are ignored, so `ISO_IR 100`, `ISO 2022 IR 100` and
    /// `ISO-IR-100` all mean ISO-IR 100. Unknown names fall back to the
    /// default repertoire (decoded as ISO-8859-1).
    fn parse(term: &str) -> Term {
        let norm: String = term
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-' | '\0'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let single = |s| {
            Term::Initial(State {
                g0: G0::Ascii,
                g1: G1::Single(s),
            })
        };
        let g1 = |g1| Term::Initial(State { g0: G0::Ascii, g1 });
        match norm.as_str() {
            "ISOIR192" | "UTF8" => return Term::Whole(Multi::Utf8),
            "GB18030" => return Term::Whole(Multi::Gb18030),
            "GBK" | "ISO2022GBK" => return Term::Whole(Multi::Gbk),
            "ISO202258" => return g1(G1::Gb2312),
            _ => {}
        }
        let number = norm
            .strip_prefix("ISO2022IR")
            .or_else(|| norm.strip_prefix("ISOIR"));
        match number {
            Some("100") => single(SingleByte::Latin1),
            Some("101") => single(SingleByte::Latin2),
            Some("109") => single(SingleByte::Latin3),
            Some("110") => single(SingleByte::Latin4),
            Some("144") => single(SingleByte::Cyrillic),
            Some("127") => single(SingleByte::Arabic),
            Some("126") => single(SingleByte::Greek),
            Some("138") => single(SingleByte::Hebrew),
            Some("148") => single(SingleByte::Latin5),
            Some("166") => single(SingleByte::Thai),
            Some("13") => Term::Initial(State {
                g0: G0::Romaji,
                g1: G1::Katakana,
            }),
            Some("149") => g1(G1::Ksx1001),
            Some("58") => g1(G1::Gb2312),
            // "", ISO-IR 6, and sets that are not allowed as value 1 (IR 87,
            // IR 159), or unknown names.
            _ => Term::Initial(DEFAULT_STATE),
        }
    }
}

/// Escape sequences of PS3.3 tables C.12-3 and C.12-4 (the bytes after ESC).
fn escape_action(seq: &[u8]) -> Option<EscapeAction> {
    use EscapeAction::{SetG0, SetG1};
    use SingleByte::*;
    Some(match seq {
        b"(B" => SetG0(G0::Ascii),
        b"(J" => SetG0(G0::Romaji),
        b"$B" | b"$@" => SetG0(G0::Jis0208),
        b"$(D" => SetG0(G0::Jis0212),
        b"-A" => SetG1(G1::Single(Latin1)),
        b"-B" => SetG1(G1::Single(Latin2)),
        b"-C" => SetG1(G1::Single(Latin3)),
        b"-D" => SetG1(G1::Single(Latin4)),
        b"-L" => SetG1(G1::Single(Cyrillic)),
        b"-G" => SetG1(G1::Single(Arabic)),
        b"-F" => SetG1(G1::Single(Greek)),
        b"-H" => SetG1(G1::Single(Hebrew)),
        b"-M" => SetG1(G1::Single(Latin5)),
        b"-T" => SetG1(G1::Single(Thai)),
        b")I" => SetG1(G1::Katakana),
        b"$)C" => SetG1(G1::Ksx1001),
        b"$)A" => SetG1(G1::Gb2312),
        _ => return None,
    })
}

enum EscapeAction {
    SetG0(G0),
    SetG1(G1),
}

/// Length of the ISO 2022 escape sequence at the start of `bytes` (which
/// starts with ESC): ESC, intermediate bytes 0x20-0x2F, one final byte
/// 0x30-0x7E. `None` when the bytes do not form one.
fn escape_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < bytes.len() && (0x20..=0x2F).contains(&bytes[i]) {
        i += 1;
    }
    match bytes.get(i) {
        Some(0x30..=0x7E) if i > 1 => Some(i + 1),
        _ => None,
    }
}

fn decode_iso2022(bytes: &[u8], initial: State, delimiters: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 2);
    let mut state = initial;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == ESC {
            flush(&mut out, &bytes[run_start..i], state);
            match escape_len(&bytes[i..]) {
                Some(len) => {
                    match escape_action(&bytes[i + 1..i + len]) {
                        Some(EscapeAction::SetG0(g0)) => state.g0 = g0,
                        Some(EscapeAction::SetG1(g1)) => state.g1 = g1,
                        // A well-formed but unknown designation: skip it.
                        None => {}
                    }
                    i += len;
                }
                // A stray ESC: drop it.
                None => i += 1,
            }
            run_start = i;
            continue;
        }
        // With a two-byte set in G0 every byte below 0x80 belongs to a
        // character; the writer must have switched back before a delimiter.
        let g0_single = matches!(state.g0, G0::Ascii | G0::Romaji);
        if g0_single && state != initial && delimiters.contains(&b) {
            flush(&mut out, &bytes[run_start..i], state);
            state = initial;
            run_start = i;
        }
        i += 1;
    }
    flush(&mut out, &bytes[run_start..], state);
    out
}

/// Decodes a run of bytes during which the designations do not change.
fn flush(out: &mut String, run: &[u8], state: State) {
    if run.is_empty() {
        return;
    }
    match state.g0 {
        G0::Ascii | G0::Romaji => decode_g1(out, run, state.g1),
        G0::Jis0208 | G0::Jis0212 => {
            // Bytes below 0x80 are two-byte JIS characters, bytes above are
            // whatever G1 holds.
            let prefix: &[u8] = if state.g0 == G0::Jis0208 {
                b"\x1b$B"
            } else {
                b"\x1b$(D"
            };
            for (high, part) in split_by_high_bit(run) {
                if high {
                    decode_g1(out, part, state.g1);
                } else {
                    let mut buf = Vec::with_capacity(prefix.len() + part.len());
                    buf.extend_from_slice(prefix);
                    buf.extend_from_slice(part);
                    out.push_str(&Multi::Iso2022Jp.decode(&buf));
                }
            }
        }
    }
}

fn split_by_high_bit(run: &[u8]) -> impl Iterator<Item = (bool, &[u8])> {
    let mut rest = run;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let high = first >= 0x80;
        let n = rest
            .iter()
            .position(|&b| (b >= 0x80) != high)
            .unwrap_or(rest.len());
        let (part, tail) = rest.split_at(n);
        rest = tail;
        Some((high, part))
    })
}

/// Decodes bytes with ASCII in the lower half and `g1` in the upper half.
fn decode_g1(out: &mut String, run: &[u8], g1: G1) {
    match g1 {
        G1::Single(set) => set.decode_into(out, run),
        G1::Katakana => out.push_str(&Multi::ShiftJis.decode(run)),
        G1::Ksx1001 => out.push_str(&Multi::EucKr.decode(run)),
        G1::Gb2312 => out.push_str(&Multi::Gbk.decode(run)),
    }
}

impl SingleByte {
    fn decode_into(self, out: &mut String, bytes: &[u8]) {
        if self == SingleByte::Latin1 {
            out.extend(bytes.iter().map(|&b| b as char));
            return;
        }
        let table = self.upper_half();
        out.extend(bytes.iter().map(|&b| {
            if b < 0x80 {
                b as char
            } else {
                table[usize::from(b - 0x80)]
            }
        }));
    }

    /// The characters for bytes 0x80-0xFF, built once from the
    /// dicom-encoding codecs (U+FFFD where a set has no character).
    fn upper_half(self) -> &'static [char; 128] {
        type Table = OnceLock<[char; 128]>;
        static TABLES: [Table; 10] = [const { OnceLock::new() }; 10];
        // Latin-1 and Latin-5 are computed, the others come from the codecs.
        let (slot, codec): (usize, Option<&dyn TextCodec>) = match self {
            SingleByte::Latin1 => (0, None),
            SingleByte::Latin2 => (1, Some(&IsoIr101CharacterSetCodec)),
            SingleByte::Latin3 => (2, Some(&IsoIr109CharacterSetCodec)),
            SingleByte::Latin4 => (3, Some(&IsoIr110CharacterSetCodec)),
            SingleByte::Cyrillic => (4, Some(&IsoIr144CharacterSetCodec)),
            SingleByte::Arabic => (5, Some(&IsoIr127CharacterSetCodec)),
            SingleByte::Greek => (6, Some(&IsoIr126CharacterSetCodec)),
            SingleByte::Hebrew => (7, Some(&IsoIr138CharacterSetCodec)),
            SingleByte::Latin5 => (8, None),
            SingleByte::Thai => (9, Some(&IsoIr166CharacterSetCodec)),
        };
        TABLES[slot].get_or_init(|| {
            let mut table = ['\u{FFFD}'; 128];
            for (i, c) in table.iter_mut().enumerate() {
                let byte = 0x80 + i as u8;
                *c = match codec {
                    Some(codec) => single_char(codec.decode(&[byte]).ok()).unwrap_or('\u{FFFD}'),
                    None if self == SingleByte::Latin5 => latin5(byte),
                    None => byte as char,
                };
            }
            table
        })
    }
}

fn single_char(s: Option<String>) -> Option<char> {
    let s = s?;
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// ISO-8859-9 differs from ISO-8859-1 in six positions.
fn latin5(byte: u8) -> char {
    match byte {
        0xD0 => '\u{011E}',
        0xDD => '\u{0130}',
        0xDE => '\u{015E}',
        0xF0 => '\u{011F}',
        0xFD => '\u{0131}',
        0xFE => '\u{015F}',
        b => b as char,
    }
}

impl Multi {
    fn decode(self, bytes: &[u8]) -> String {
        match self {
            Multi::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            _ => {
                let codec: &dyn TextCodec = match self {
                    Multi::Utf8 => unreachable!("handled above"),
                    Multi::Gb18030 => &Gb18030CharacterSetCodec,
                    Multi::Gbk => &GBKCharacterSetCodec,
                    Multi::ShiftJis => &IsoIr13CharacterSetCodec,
                    Multi::EucKr => &IsoIr149CharacterSetCodec,
                    Multi::Iso2022Jp => &IsoIr87CharacterSetCodec,
                };
                decode_lossy(codec, bytes)
            }
        }
    }
}

/// Decodes with a dicom-encoding codec, turning its rendering of invalid
/// bytes (a backslash and three octal digits) into U+FFFD, so no stray
/// value separators appear in the text.
fn decode_lossy(codec: &dyn TextCodec, bytes: &[u8]) -> String {
    let Ok(text) = codec.decode(bytes) else {
        return bytes
            .iter()
            .map(|&b| if b < 0x80 { b as char } else { '\u{FFFD}' })
            .collect();
    };
    let backslashes_in = bytes.iter().filter(|&&b| b == b'\\').count();
    let backslashes_out = text.matches('\\').count();
    if backslashes_out == 0 {
        return text;
    }
    if backslashes_in == 0 {
        // Every backslash is the codec's rendering of an invalid byte.
        return replace_octal_escapes(&text);
    }
    if backslashes_out <= backslashes_in {
        // Plausibly all genuine (0x5C may also be a trail byte).
        return text;
    }
    // Invalid bytes and genuine backslashes: decode the pieces between
    // 0x5C bytes separately (the text is malformed anyway).
    let mut out = String::with_capacity(text.len());
    for (i, piece) in bytes.split(|&b| b == b'\\').enumerate() {
        if i > 0 {
            out.push('\\');
        }
        let decoded = codec.decode(piece).unwrap_or_default();
        out.push_str(&replace_octal_escapes(&decoded));
    }
    out
}

fn replace_octal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let after = &rest.as_bytes()[p + 1..];
        let octal = after.len() >= 3 && after[..3].iter().all(|b| (b'0'..=b'7').contains(b));
        if octal {
            out.push('\u{FFFD}');
            rest = &rest[p + 4..];
        } else {
            out.push('\\');
            rest = &rest[p + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_latin1() {
        assert_eq!(decode_text(b"Buc^J\xe9r\xf4me", None), "Buc^Jérôme");
        assert_eq!(
            decode_text(b"Buc^J\xe9r\xf4me", Some("ISO_IR 100")),
            "Buc^Jérôme"
        );
        assert_eq!(decode_text(b"abc", Some("")), "abc");
        assert_eq!(decode_text(b"abc", Some("NOT A CHARSET")), "abc");
        assert_eq!(decode_text(b"\xe9", Some("NOT A CHARSET")), "é");
    }

    #[test]
    fn utf8_and_lossy() {
        assert_eq!(
            decode_text("Wang^XiaoDong=王^小東".as_bytes(), Some("ISO_IR 192")),
            "Wang^XiaoDong=王^小東"
        );
        assert_eq!(decode_text(b"a\xffb", Some("ISO_IR 192")), "a\u{FFFD}b");
    }

    #[test]
    fn single_byte_sets() {
        // Greek: Διονυσιος
        assert_eq!(
            decode_text(b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2", Some("ISO_IR 126")),
            "Διονυσιος"
        );
        // Cyrillic: Люкceмбypг
        assert_eq!(decode_text(b"\xbb\xee\xda", Some("ISO_IR 144")), "Люк");
        // Hebrew: שרון
        assert_eq!(decode_text(b"\xf9\xf8\xe5\xef", Some("ISO_IR 138")), "שרון");
        // Turkish
        assert_eq!(decode_text(b"\xdd\xfd\xfe", Some("ISO_IR 148")), "İış");
        // A hole in ISO-8859-3 becomes U+FFFD, not an octal escape.
        assert_eq!(decode_text(b"a\xa5b", Some("ISO_IR 109")), "a\u{FFFD}b");
    }

    #[test]
    fn japanese_code_extensions() {
        // PS3.5 annex H.3.1: Yamada^Tarou=山田^太郎=やまだ^たろう
        let bytes =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode_person_name(bytes, Some("\\ISO 2022 IR 87")),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
        // PS3.5 annex H.3.2: ISO 2022 IR 13 with katakana in G1.
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode_person_name(bytes, Some("ISO 2022 IR 13\\ISO 2022 IR 87")),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn korean_code_extensions() {
        // PS3.5 annex I.2: Hong^Gildong=洪^吉洞=홍^길동
        let bytes = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode_person_name(bytes, Some("\\ISO 2022 IR 149")),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
    }

    #[test]
    fn greek_designation_resets_at_delimiters() {
        // Latin-1 first, Greek designated into G1, reset at '^'.
        let bytes = b"\x1b-F\xc4\xe9^\xe9";
        assert_eq!(
            decode_person_name(bytes, Some("ISO 2022 IR 100\\ISO 2022 IR 126")),
            "Δι^é"
        );
        // Not a PN delimiter for other text.
        assert_eq!(
            decode_text(bytes, Some("ISO 2022 IR 100\\ISO 2022 IR 126")),
            "Δι^ι"
        );
    }

    #[test]
    fn garbage_never_fails() {
        let samples: &[&[u8]] = &[
            b"\x1b",
            b"\x1b$",
            b"\x1b$B",
            b"\x1b$B\x21",
            b"\x1b$B\xff\xfe\x1b(B\\",
            b"\x1b$)C\xff\\\xfe",
            b"\x1b\x1b\x1b(Z\x80",
        ];
        for scs in [
            None,
            Some("ISO 2022 IR 6\\ISO 2022 IR 87"),
            Some("ISO_IR 13"),
            Some("GB18030"),
            Some("GBK"),
        ] {
            for s in samples {
                let _ = decode_text(s, scs);
                let _ = decode_person_name(s, scs);
            }
        }
        // Invalid Shift-JIS bytes become U+FFFD, not "\ooo".
        assert_eq!(decode_text(b"a\x81", Some("ISO_IR 13")), "a\u{FFFD}");
    }

    #[test]
    fn chinese() {
        // GB18030 / GBK: 王小东
        assert_eq!(
            decode_text(b"\xcd\xf5\xd0\xa1\xb6\xab", Some("GB18030")),
            "王小东"
        );
        assert_eq!(
            decode_text(b"\xcd\xf5\xd0\xa1\xb6\xab", Some("GBK")),
            "王小东"
        );
        assert_eq!(
            decode_text(b"\x1b$)A\xcd\xf5\xd0\xa1\xb6\xab", Some("\\ISO 2022 IR 58")),
            "王小东"
        );
    }
}
