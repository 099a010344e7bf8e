//! `spark-cli`: plays Spark LMS against the hub, with nothing but the shared secret.
//!
//! ```text
//! SPARK_SSO_SECRET=... spark-cli sso-link --sub spark-42 --email ada@example.com
//!     [--given-name Ada] [--family-name Lovelace] [--role student] [--ttl 600] [--base-url http://127.0.0.1:3000]
//! SPARK_WEBHOOK_SECRET=... spark-cli sign-submission --user spark-42 --course bio-101 --assignment lab-3
//!     [--text "My report"] [--file URL,TYPE,NAME]... [--grade 93]
//! ```
//! `sign-submission` prints the JSON body and its `X-Spark-Signature`, ready for curl;
//! `send-submission` (same options, plus `--base-url`) posts it and prints the answer.
//! The token is the one Spark's Node code signs with `jsonwebtoken`: HS256 over
//! `{sub, email, given_name, family_name, role, iat, exp}`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

fn main() {
    if let Err(e) = run() {
        eprintln!("spark-cli: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let command = args.next().ok_or("usage: spark-cli sso-link --sub ID --email EMAIL [options]")?;
    let mut options = HashMap::new();
    let mut files = Vec::new();
    while let Some(flag) = args.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag}"))?.to_string();
        let value = args.next().ok_or_else(|| format!("--{name} needs a value"))?;
        if name == "file" {
            files.push(value);
        } else {
            options.insert(name, value);
        }
    }
    match command.as_str() {
        "sso-link" => {
            let secret = options
                .get("secret")
                .cloned()
                .or_else(|| std::env::var("SPARK_SSO_SECRET").ok())
                .ok_or("set SPARK_SSO_SECRET (or --secret) to the shared SSO secret")?;
            let base = options.get("base-url").map_or("http://127.0.0.1:3000", String::as_str).trim_end_matches('/');
            let ttl: i64 = options.get("ttl").map_or(Ok(600), |t| t.parse()).map_err(|_| "--ttl takes seconds")?;
            let token = sso_token(&secret, &options, ttl)?;
            let mut url = url::Url::parse(&format!("{base}/spark/sso")).map_err(|e| e.to_string())?;
            url.query_pairs_mut().append_pair("token", &token);
            println!("{url}");
            Ok(())
        }
        "sign-submission" | "send-submission" => {
            let secret = options
                .get("secret")
                .cloned()
                .or_else(|| std::env::var("SPARK_WEBHOOK_SECRET").ok())
                .ok_or("set SPARK_WEBHOOK_SECRET (or --secret) to the shared webhook secret")?;
            let body = submission_body(&options, &files)?;
            let signature = hex(&hmac_sha256(secret.as_bytes(), body.as_bytes()));
            if command == "sign-submission" {
                println!("{}", serde_json::json!({ "body": body, "signature": signature }));
                return Ok(());
            }
            let base = options.get("base-url").map_or("http://127.0.0.1:3000", String::as_str).trim_end_matches('/');
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let (status, answer) = runtime.block_on(async {
                let response = reqwest::Client::new()
                    .post(format!("{base}/spark/webhook/submission"))
                    .header("content-type", "application/json")
                    .header("x-spark-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                Ok::<_, String>((status, response.text().await.map_err(|e| e.to_string())?))
            })?;
            println!("{status} {answer}");
            if status >= 400 { Err(format!("the hub answered {status}")) } else { Ok(()) }
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn sso_token(secret: &str, options: &HashMap<String, String>, ttl: i64) -> Result<String, String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
    let mut claims = Map::new();
    for (claim, option, required) in [
        ("sub", "sub", true),
        ("email", "email", true),
        ("given_name", "given-name", false),
        ("family_name", "family-name", false),
        ("role", "role", false),
    ] {
        match options.get(option) {
            Some(v) => {
                claims.insert(claim.into(), Value::String(v.clone()));
            }
            None if required => return Err(format!("--{option} is required")),
            None => {}
        }
    }
    claims.entry("role").or_insert_with(|| Value::String("student".into()));
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl).into());
    jsonwebtoken::encode(&Header::default(), &Value::Object(claims), &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| e.to_string())
}

/// Seed 000's payload: `{spark_user_id, spark_assignment_id, spark_course_id, submission_text,
/// submission_files: [{url, type, filename}], submitted_at, grade}`.
fn submission_body(options: &HashMap<String, String>, files: &[String]) -> Result<String, String> {
    let get = |name: &str| options.get(name).cloned().ok_or_else(|| format!("--{name} is required"));
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            let mut parts = f.splitn(3, ',');
            let url = parts.next().unwrap_or_default();
            serde_json::json!({ "url": url, "type": parts.next(), "filename": parts.next() })
        })
        .collect();
    let mut payload = serde_json::json!({
        "spark_user_id": get("user")?,
        "spark_assignment_id": get("assignment")?,
        "spark_course_id": get("course")?,
        "submission_text": options.get("text"),
        "submission_files": files,
        "submitted_at": iso_now(),
    });
    if let Some(grade) = options.get("grade") {
        payload["grade"] = grade.parse::<f64>().map(Value::from).unwrap_or_else(|_| Value::String(grade.clone()));
    }
    Ok(payload.to_string())
}

/// Now as JavaScript's `toISOString` writes it (`2026-11-22T02:00:00.000Z`).
fn iso_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((now.as_secs() / 86400) as i64, now.as_secs() % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        now.subsec_millis()
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
