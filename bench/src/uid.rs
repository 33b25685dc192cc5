//! Fixed-length UIDs under the `2.25.` root (PS3.5 B.2), unique per run.
//!
//! Every UID is exactly [`UID_LEN`] = 44 characters: `2.25.`, then 39
//! decimal digits: a 16-digit run number starting with `1` (so the number
//! stays below 2^128 as `2.25.` requires), one digit for the kind of UID
//! (study, series, instance) and a 22-digit zero-padded counter. 44 is even,
//! so the value needs no padding byte. Writing one is a handful of divisions
//! into a caller-owned slice: no allocation.

/// Length of every UID written here, in bytes (even: no padding).
pub const UID_LEN: usize = 44;

const ROOT: &[u8; 5] = b"2.25.";
const RUN_DIGITS: usize = 16;
const COUNTER_DIGITS: usize = UID_LEN - ROOT.len() - RUN_DIGITS - 1;

/// Which UID of an instance; the kind's digit keeps the three apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidKind {
    Study = 1,
    Series = 2,
    Instance = 3,
}

/// Writes UIDs of one run.
#[derive(Debug, Clone)]
pub struct UidGen {
    run: [u8; RUN_DIGITS],
}

impl UidGen {
    /// A generator whose run number is derived from `seed`.
    pub fn new(seed: u64) -> UidGen {
        // splitmix64, so nearby seeds give unrelated run numbers.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let run = 1_000_000_000_000_000 + z % 1_000_000_000_000_000;
        let mut digits = [0u8; RUN_DIGITS];
        write_decimal(&mut digits, run);
        UidGen { run: digits }
    }

    /// A generator seeded from the clock and the process id, so two runs
    /// into the same data directory do not collide.
    pub fn from_clock() -> UidGen {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        UidGen::new(nanos ^ (u64::from(std::process::id()) << 40))
    }

    /// The 16-digit run number, as text.
    pub fn run(&self) -> &str {
        std::str::from_utf8(&self.run).expect("digits are ASCII")
    }

    /// Writes the UID of `kind` number `n` into `dst`, which must be
    /// [`UID_LEN`] bytes long.
    ///
    /// # Panics
    /// When `dst` is not [`UID_LEN`] bytes long.
    pub fn write(&self, dst: &mut [u8], kind: UidKind, n: u64) {
        assert_eq!(dst.len(), UID_LEN, "UID slots are {UID_LEN} bytes");
        let (root, rest) = dst.split_at_mut(ROOT.len());
        root.copy_from_slice(ROOT);
        let (run, rest) = rest.split_at_mut(RUN_DIGITS);
        run.copy_from_slice(&self.run);
        rest[0] = b'0' + kind as u8;
        write_decimal(&mut rest[1..], n);
    }

    /// The UID of `kind` number `n` as a string (allocates; for tests and
    /// reports).
    pub fn uid_string(&self, kind: UidKind, n: u64) -> String {
        let mut b = [0u8; UID_LEN];
        self.write(&mut b, kind, n);
        String::from_utf8(b.to_vec()).expect("UIDs are ASCII")
    }
}

const _: () = assert!(COUNTER_DIGITS >= 20, "room for any u64 counter");

/// `n` in decimal, zero-padded to fill `dst` (high digits cut if it does
/// not fit, which the digit budget above rules out for the counter).
fn write_decimal(dst: &mut [u8], mut n: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_44_valid_characters_and_distinct_by_kind() {
        let g = UidGen::new(7);
        let a = g.uid_string(UidKind::Study, 0);
        let b = g.uid_string(UidKind::Series, 0);
        let c = g.uid_string(UidKind::Instance, u64::MAX);
        for u in [&a, &b, &c] {
            assert_eq!(u.len(), UID_LEN);
            assert!(u.starts_with("2.25.1"), "{u}");
            assert!(u[5..].bytes().all(|b| b.is_ascii_digit()), "{u}");
            // below 2^128 = 340282366920938463463374607431768211456 (39 digits)
            assert!(u[5..] < *"340282366920938463463374607431768211456", "{u}");
        }
        assert_ne!(a, b);
        assert!(c.ends_with(&u64::MAX.to_string()));
        assert_ne!(UidGen::new(1).run(), UidGen::new(2).run());
    }
}
