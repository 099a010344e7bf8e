//! `spark-cli`: plays Spark LMS against the hub, with nothing but the shared secret.
//!
//! ```text
//! SPARK_SSO_SECRET=... spark-cli sso-link --sub spark-42 --email ada@example.com
//!     [--given-name Ada] [--family-name Lovelace] [--role student] [--ttl 600] [--base-url http://127.0.0.1:3000]
//! ```
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
    while let Some(flag) = args.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag}"))?.to_string();
        options.insert(name.clone(), args.next().ok_or_else(|| format!("--{name} needs a value"))?);
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
