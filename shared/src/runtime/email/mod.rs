//! Email through Amazon SES (v2): every message has a plain-text and an HTML part, built from the
//! templates in [`templates`], and goes out from the email worker ([`jobs`]), never from a request:
//! `POST /api/auth/email/start` then costs the same whether or not the address is known.
//!
//! Messages are sent as raw MIME (`multipart/alternative`), so what SES (or the local stack) keeps is
//! exactly what a mail client receives.

pub mod jobs;
pub mod templates;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Context;

/// One email, rendered.
#[derive(Clone, Debug)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("email is not configured for this function (EMAIL_SENDER)")]
    NotConfigured,
    #[error("the address cannot be used in an email header")]
    InvalidAddress,
    #[error("SES: {0}")]
    Ses(String),
}

/// Sends one message through SES from the configured sender.
pub async fn send(ctx: &Context, message: &Message) -> Result<(), EmailError> {
    let from = ctx.config.email_sender.as_deref().ok_or(EmailError::NotConfigured)?;
    let raw = mime(from, message, &crate::support::crypto::random_token(18))?;
    let content = aws_sdk_sesv2::types::EmailContent::builder()
        .raw(
            aws_sdk_sesv2::types::RawMessage::builder()
                .data(aws_sdk_sesv2::primitives::Blob::new(raw))
                .build()
                .map_err(|e| EmailError::Ses(e.to_string()))?,
        )
        .build();
    ctx.ses()
        .send_email()
        .from_email_address(from)
        .destination(aws_sdk_sesv2::types::Destination::builder().to_addresses(&message.to).build())
        .content(content)
        .send()
        .await
        .map_err(|e| EmailError::Ses(aws_sdk_sesv2::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}

/// The raw MIME message: headers (the subject RFC 2047-encoded), then the text and HTML parts,
/// each UTF-8 in base64 lines of 76 characters.
fn mime(from: &str, m: &Message, boundary: &str) -> Result<String, EmailError> {
    // Header injection: addresses come from users; a line break would add headers.
    if [from, m.to.as_str()].iter().any(|a| a.chars().any(|c| c.is_control())) {
        return Err(EmailError::InvalidAddress);
    }
    let part = |content_type: &str, body: &str| {
        let encoded = STANDARD.encode(body.as_bytes());
        let lines: Vec<&str> =
            encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
        format!(
            "--{boundary}\r\nContent-Type: {content_type}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        )
    };
    Ok(format!(
        "From: {from}\r\nTo: {to}\r\nSubject: =?UTF-8?B?{subject}?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n{text}{html}--{boundary}--\r\n",
        to = m.to,
        subject = STANDARD.encode(m.subject.as_bytes()),
        text = part("text/plain", &m.text),
        html = part("text/html", &m.html),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(to: &str) -> Message {
        Message { to: to.into(), subject: "Ça va ?".into(), text: "plain é".into(), html: "<p>html é</p>".into() }
    }

    #[test]
    fn messages_carry_both_parts_in_utf8() {
        let raw = mime("Hub <no-reply@hub.example>", &message("ada@example.com"), "b1").unwrap();
        assert!(raw.contains("Content-Type: multipart/alternative; boundary=\"b1\""));
        assert!(raw.contains(&format!("Subject: =?UTF-8?B?{}?=", STANDARD.encode("Ça va ?"))));
        assert!(raw.contains(&STANDARD.encode("plain é")));
        assert!(raw.contains(&STANDARD.encode("<p>html é</p>")));
        assert!(raw.find("text/plain").unwrap() < raw.find("text/html").unwrap(), "text first, HTML preferred");
        assert!(raw.ends_with("--b1--\r\n"));
    }

    #[test]
    fn line_breaks_in_addresses_cannot_add_headers() {
        let err = mime("no-reply@hub.example", &message("ada@example.com\r\nBcc: all@example.com"), "b").unwrap_err();
        assert!(matches!(err, EmailError::InvalidAddress));
    }
}
