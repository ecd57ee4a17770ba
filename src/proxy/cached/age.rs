//! The `Age` value of a hit answered from a header map (HTTP/2, HEAD, ranges, 304s)
//! without an allocation: `HeaderValue::from(u64)` allocated twice per hit (its bytes,
//! then their shared form). Ages under 1000 s are slices of one static text holding
//! "0" to "999" back to back; older ones are formatted as before.

use http::HeaderValue;

/// How many ages the static text holds.
const STATIC: u64 = 1000;
/// Length of "0".."999" written back to back: 10 × 1 + 90 × 2 + 900 × 3.
const LEN: usize = 2890;

/// "0123456789101112…999".
static DIGITS: [u8; LEN] = digits();

const fn digits() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let (mut n, mut at) = (0usize, 0usize);
    while n < STATIC as usize {
        let width = width(n as u64);
        let mut i = 0;
        let mut rest = n;
        while i < width {
            out[at + width - 1 - i] = b'0' + (rest % 10) as u8;
            rest /= 10;
            i += 1;
        }
        at += width;
        n += 1;
    }
    out
}

const fn width(n: u64) -> usize {
    if n < 10 {
        1
    } else if n < 100 {
        2
    } else {
        3
    }
}

/// Where `n` (under [`STATIC`]) starts in [`DIGITS`].
fn offset(n: u64) -> usize {
    let n = n as usize;
    match n {
        0..=9 => n,
        10..=99 => 10 + 2 * (n - 10),
        _ => 190 + 3 * (n - 100),
    }
}

/// `secs` as an `Age` field value.
pub fn value(secs: u64) -> HeaderValue {
    if secs >= STATIC {
        return HeaderValue::from(secs);
    }
    let at = offset(secs);
    let text = &DIGITS[at..at + width(secs)];
    // Digits only: valid UTF-8 and a valid field value.
    match std::str::from_utf8(text) {
        Ok(text) => HeaderValue::from_static(text),
        Err(_) => HeaderValue::from(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_age_is_its_decimal_text() {
        for secs in (0..1200).chain([9_999, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(value(secs), HeaderValue::from(secs), "{secs}");
        }
    }
}
