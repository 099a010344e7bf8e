//! Every email the hub sends, in one place: each has a subject, a plain-text part and an HTML part
//! (values HTML-escaped; links are ours, built from `PUBLIC_BASE_URL`).

use super::Message;
use crate::support::html::escape;

/// Wraps an HTML body in the common layout of our emails.
fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:auto;padding:1rem;color:#1a1a1a\">\
         {body}<p style=\"color:#666;font-size:.85rem\">If you did not expect this email, you can ignore it.</p></body></html>",
        title = escape(title)
    )
}

fn button(href: &str, label: &str) -> String {
    format!(
        "<p><a href=\"{}\" style=\"display:inline-block;padding:.6rem 1.2rem;background:#1f5fbf;color:#fff;\
         border-radius:.3rem;text-decoration:none\">{}</a></p>",
        escape(href),
        escape(label)
    )
}

/// The single-use sign-in link (`POST /api/auth/email/start`).
pub fn sign_in(to: &str, link: &str, minutes: i64) -> Message {
    let subject = "Your sign-in link".to_string();
    let text = format!(
        "Use this link to sign in. It works once, for {minutes} minutes:\n\n{link}\n\n\
         If you did not ask to sign in, you can ignore this email."
    );
    let html = layout(
        &subject,
        &format!(
            "<h1 style=\"font-size:1.3rem\">Sign in</h1><p>Use this button to sign in. It works once, for {minutes} minutes.</p>{}\
             <p style=\"font-size:.85rem\">Or paste this address into your browser:<br>{}</p>",
            button(link, "Sign in"),
            escape(link)
        ),
    );
    Message { to: to.into(), subject, text, html }
}

/// What a student's invitation says to the person invited.
pub struct InvitationText<'a> {
    pub student_name: &'a str,
    pub relationship: &'a str,
    pub message: Option<&'a str>,
    pub can_view_evidence: bool,
    pub can_comment: bool,
    pub link: &'a str,
    pub days: i64,
}

/// The invitation to follow a student (`POST /api/observers/invitations`).
pub fn invitation(to: &str, i: &InvitationText) -> Message {
    let subject = format!("{} invites you to follow their learning", i.student_name);
    let mut can = vec!["see their quests, XP and badges"];
    if i.can_view_evidence {
        can.push("see the work they hand in");
    }
    if i.can_comment {
        can.push("leave them encouraging comments");
    }
    let can = can.join(", ");
    let note_text = i.message.map(|m| format!("\nTheir message:\n\n{m}\n")).unwrap_or_default();
    let text = format!(
        "{name} invited you, as their {rel}, to follow their learning. You will be able to {can}.\n{note_text}\n\
         Accept the invitation (valid for {days} days):\n\n{link}\n",
        name = i.student_name,
        rel = i.relationship,
        days = i.days,
        link = i.link
    );
    let note_html = i
        .message
        .map(|m| format!("<blockquote style=\"white-space:pre-wrap;border-left:3px solid #ccc;margin:0;padding-left:1rem\">{}</blockquote>", escape(m)))
        .unwrap_or_default();
    let html = layout(
        &subject,
        &format!(
            "<h1 style=\"font-size:1.3rem\">{name} invites you to follow their learning</h1>\
             <p>As their {rel}, you will be able to {can}.</p>{note_html}{button}\
             <p style=\"font-size:.85rem\">The invitation is valid for {days} days. Or paste this address into your browser:<br>{link}</p>",
            name = escape(i.student_name),
            rel = escape(i.relationship),
            can = escape(&can),
            button = button(i.link, "See the invitation"),
            days = i.days,
            link = escape(i.link)
        ),
    );
    Message { to: to.into(), subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_escape_what_the_student_wrote_in_html_only() {
        let m = invitation(
            "gran@example.com",
            &InvitationText {
                student_name: "Ada <b>",
                relationship: "grandparent",
                message: Some("<script>alert(1)</script> & love"),
                can_view_evidence: true,
                can_comment: false,
                link: "https://hub.example/observers/accept?code=abc",
                days: 7,
            },
        );
        assert!(m.html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; love"));
        assert!(!m.html.contains("<script>"));
        assert!(m.text.contains("<script>alert(1)</script> & love"), "the text part is text");
        assert!(m.text.contains("see the work they hand in") && !m.text.contains("comments"));
        assert!(m.html.contains("https://hub.example/observers/accept?code=abc"));
    }
}
