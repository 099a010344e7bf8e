//! Free text from people: the rules it must meet before we keep it.

/// Free text from a person (messages, comments): trimmed, at most `max` characters, no control
/// characters other than line breaks and tabs. `None` when empty after trimming.
pub fn clean_text(text: &str, max: usize) -> Result<Option<String>, &'static str> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err("too long");
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err("contains control characters");
    }
    Ok((!text.is_empty()).then(|| text.replace("\r\n", "\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(clean_text("  hi\r\nthere ", 20).unwrap().as_deref(), Some("hi\nthere"));
        assert_eq!(clean_text("   ", 20).unwrap(), None);
        assert!(clean_text(&"é".repeat(21), 20).is_err());
        assert!(clean_text(&"é".repeat(20), 20).is_ok());
        assert!(clean_text("a\u{0}b", 20).is_err());
        assert!(clean_text("a\u{1b}[31mb", 20).is_err());
    }
}
