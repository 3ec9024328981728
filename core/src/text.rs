//! Bounded text: what a client sends is cut before it is kept.

/// `v`, cut to at most `max` bytes (on a character boundary) and marked with a trailing `…`
/// when cut (empty when `max` cannot hold the marker).
pub fn bounded(v: &str, max: usize) -> String {
    if v.len() <= max {
        return v.to_string();
    }
    let marker = '…'.len_utf8();
    if max < marker {
        return String::new();
    }
    let mut end = max - marker;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary_and_says_so() {
        assert_eq!(bounded("web-1", 256), "web-1");
        assert_eq!(bounded("abcdef", 5), "ab…");
        let cut = bounded(&"é".repeat(10), 8);
        assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
        assert_eq!(bounded("abcdef", 2), "");
    }
}
