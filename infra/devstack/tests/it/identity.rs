//! Identity across schools (DESIGN.md §3a) end to end through the dev gateway, with the LTI platform
//! simulator and Spark's own Node signer: an address a provider asserts never reaches outside its
//! organization (invitations, email sign-in), never opens an account of another role, and tells
//! nothing about addresses elsewhere; no login changes a role (course roles decide course rights);
//! one-time login codes work only in the browser that made the login, and only while the address's
//! invalid-code budget lasts; a sign-in link leads to an app's consent only in the browser that asked.

use hub::domain::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestStack, error_code};
use crate::lti_flow::{CLAIM, Lms, launch_code, setup_with};
use crate::spark_sso::{exchange_from, no_redirects_from, node_token, signed_in_code, sso_from};

const NRPS: &str = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice";
const AGS: &str = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint";
const SCORE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";

/// One school, `lincoln`, with an LMS registered for it (which trusts our JWKS, for its services; its
/// addresses registered as the school's records, so that the rules beyond that one are what is tested)
/// and Spark's organization set to it too.
async fn school(name: &str) -> Lms {
    let lms = setup_with(name, &[("SparkOrganizationId", "lincoln")], |p| p.base_url.clone()).await;
    lms.platform.trust_tool(crate::lti_flow::CLIENT_ID, &lms.t.url("/api/lti/jwks"));
    let registration = hub::integrations::lti::registration::registration_id(&lms.issuer, crate::lti_flow::CLIENT_ID);
    let r = lms
        .t
        .http
        .put(lms.t.url(&format!("/api/lti/registrations/{registration}")))
        .bearer_auth(&lms.admin)
        .json(&json!({"emails_are_school_records": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    lms
}

/// Addresses unique to this run (every run shares the local SES).
fn domain(name: &str) -> String {
    format!("{name}-{:08x}.example", rand::random::<u32>())
}

async fn launch(lms: &Lms, sub: &str, claims: Value) -> reqwest::Response {
    lms.platform.prepare(sub, claims);
    let form = lms.login(sub).await;
    lms.post(&form, Some(&form.cookie)).await
}

/// A launch's claims for `sub` with an `email` and a course role.
fn claims(lms: &Lms, sub: &str, role: &str, email: &str) -> Value {
    let mut claims = lms.claims(sub, role, "LtiResourceLinkRequest");
    claims["email"] = json!(email);
    claims
}

async fn post_json(t: &TestStack, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut r = t.http.post(t.url(path)).json(&body);
    if let Some(token) = token {
        r = r.bearer_auth(token);
    }
    r.send().await.unwrap()
}

/// Signs in by email as a person would: asks for a link, reads the mail, posts its code.
async fn sign_in_by_email(t: &TestStack, email: &str) -> String {
    assert_eq!(post_json(t, "/api/auth/email/start", None, json!({ "email": email })).await.status(), 202);
    let mails = t.deliver_emails_to(email).await;
    let mail = mails.iter().rev().find(|m| m.text.contains("/auth/sign-in/confirm")).expect("a sign-in link");
    let code = mail.code(&t.base, "/auth/sign-in/confirm");
    let r = post_json(t, "/api/auth/email/verify", None, json!({ "code": code })).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

/// `ｐａｒｅｎｔ@…`: every ASCII letter in its full-width form (the same address after folding).
fn full_width(email: &str) -> String {
    email
        .chars()
        .map(|c| if c.is_ascii_lowercase() { char::from_u32(c as u32 - 'a' as u32 + 0xFF41).unwrap() } else { c })
        .collect()
}

#[tokio::test]
async fn another_schools_lms_can_neither_read_nor_take_an_invitation() {
    let lms = school("idinvite").await;
    let t = &lms.t;
    let domain = domain("idinvite");
    let parent = format!("parent@{domain}");
    // A student of another school, `maple`, invites a parent.
    let (kid, kid_session) = t.signed_in_as(&format!("kid@{domain}"), Role::Student, "maple").await;
    let invite = json!({"email": parent, "relationship": "parent", "can_view_evidence": true, "can_comment": true});
    assert_eq!(post_json(t, "/api/observers/invitations", Some(&kid_session.access_token), invite).await.status(), 201);
    let invitation = t.deliver_emails_to(&parent).await.pop().expect("the invitation");
    let code = invitation.code(&t.base, "/observers/accept");

    // Lincoln's LMS launches learners asserting the address, plainly and in full-width letters.
    let mut squatters = Vec::new();
    for (sub, email) in [("mallory", parent.clone()), ("mallory-fw", full_width(&parent))] {
        let (token, me) = lms.signed_in(launch(&lms, sub, claims(&lms, sub, "Learner", &email)).await).await;
        assert_eq!((me["org_id"].as_str(), me["email_proven"].as_bool()), (Some("lincoln"), Some(false)), "{me}");
        assert_eq!(t.get_json("/api/observers/pending", &token).await, json!([]), "{sub} lists nothing");
        let r = post_json(t, "/api/observers/invitations/accept", Some(&token), json!({ "code": code })).await;
        assert_eq!(error_code(r).await, (403, "invitation_email_mismatch".into()), "{sub} accepts nothing");
        squatters.push(token);
    }

    // The real parent signs in by email: an account of their own, proven, that sees and accepts it.
    let token = sign_in_by_email(t, &parent).await;
    let me = t.get_json("/api/auth/me", &token).await;
    assert_eq!(
        (me["role"].as_str(), me["org_id"].as_str(), me["email_proven"].as_bool()),
        (Some("observer"), None, Some(true))
    );
    let pending = t.get_json("/api/observers/pending", &token).await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    let r = post_json(t, "/api/observers/invitations/accept", Some(&token), json!({ "code": code })).await;
    assert_eq!(r.status(), 200);
    let students = t.get_json("/api/observers/students", &token).await;
    assert_eq!(students[0]["student_id"], kid.id.as_str());
    for squatter in &squatters {
        assert_eq!(t.get_json("/api/observers/students", squatter).await, json!([]), "no link to another school's LMS");
    }
}

#[tokio::test]
async fn a_launch_tells_nothing_about_addresses_of_other_schools() {
    let lms = school("idoracle").await;
    let t = &lms.t;
    let domain = domain("idoracle");
    // An address with accounts in another school (an operator-made teacher) and an address nobody has.
    let (known, _) = t.signed_in_as(&format!("known@{domain}"), Role::Teacher, "maple").await;
    let mut outcomes = Vec::new();
    for (sub, email) in [("probe-1", format!("known@{domain}")), ("probe-2", format!("nobody@{domain}"))] {
        let launched = launch(&lms, sub, claims(&lms, sub, "Learner", &email)).await;
        let status = launched.status().as_u16();
        let me = lms.session(launched).await;
        assert_ne!(me["id"], known.id.as_str());
        outcomes.push((status, me["role"].clone(), me["org_id"].clone(), me["email_proven"].clone()));
    }
    assert_eq!(outcomes[0], outcomes[1], "the same answer whether or not the address exists elsewhere");
    assert_eq!(t.ctx.store().get_user(&known.id).await.unwrap().unwrap(), known, "untouched");
}

#[tokio::test]
async fn a_learners_launch_roster_or_spark_login_with_a_teachers_address_never_opens_the_teachers_account() {
    let lms = school("idteacher").await;
    let t = &lms.t;
    let domain = domain("idteacher");
    let address = format!("teach@{domain}");
    // The teacher: made by their Instructor launch; a roster service for the course.
    let url = lms.platform.set_members(
        "course-7",
        vec![json!({"user_id": "roster-learner", "status": "Active", "email": address,
                     "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]})],
    );
    let mut teacher_claims = claims(&lms, "teacher-sub", "Instructor", &address);
    teacher_claims[NRPS] = json!({"context_memberships_url": url, "service_versions": ["2.0"]});
    let (teacher_token, teacher) = lms.signed_in(launch(&lms, "teacher-sub", teacher_claims).await).await;
    assert_eq!(teacher["role"], "teacher");
    let unchanged = |me: Value| {
        assert_eq!((me["id"].clone(), me["role"].clone()), (teacher["id"].clone(), json!("teacher")), "{me}");
    };

    // The course roster lists a Learner with the teacher's address: created apart, the teacher untouched.
    let course = hub::integrations::lti::links::course_id(
        &hub::integrations::lti::registration::registration_id(&lms.issuer, crate::lti_flow::CLIENT_ID),
        "course-7",
    );
    let r = t
        .http
        .post(t.url(&format!("/api/lti/contexts/{course}/roster-sync")))
        .bearer_auth(&teacher_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    t.drain("lti-roster-sync-worker").await;
    let sync = t.get_json(&location, &teacher_token).await;
    assert_eq!((sync["status"].as_str(), sync["summary"]["created"].as_u64()), (Some("succeeded"), Some(1)), "{sync}");
    let registration = hub::integrations::lti::registration::registration_id(&lms.issuer, crate::lti_flow::CLIENT_ID);
    let member = t.ctx.store().user_id_by_identity(&format!("lti:{registration}"), "roster-learner").await.unwrap();
    assert_ne!(member.as_deref(), teacher["id"].as_str(), "created apart");
    unchanged(t.get_json("/api/auth/me", &teacher_token).await);

    // A learner of the same LMS with a new sub and the teacher's address: an account of their own.
    let (_, learner) =
        lms.signed_in(launch(&lms, "learner-sub", claims(&lms, "learner-sub", "Learner", &address)).await).await;
    assert_ne!(learner["id"], teacher["id"]);
    assert_eq!(learner["role"], "student");
    unchanged(t.get_json("/api/auth/me", &teacher_token).await);

    // A Spark student (Spark's own Node signer) with the teacher's address: the same.
    let (_, secret) = t.key("SparkSsoSecret").await;
    let browser = no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 21));
    let (code, binding) = signed_in_code(&sso_from(t, &node_token(&secret, "spark-kid", &address), &browser).await);
    let r = exchange_from(t, &browser, &code, &binding).await;
    assert_eq!(r.status(), 200);
    let spark_session = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let spark_me = t.get_json("/api/auth/me", &spark_session).await;
    assert_ne!(spark_me["id"], teacher["id"]);
    assert_eq!(spark_me["role"], "student");
    unchanged(t.get_json("/api/auth/me", &teacher_token).await);
    // The teacher's own launch still opens the teacher's account, as a teacher.
    unchanged(
        lms.session(launch(&lms, "teacher-sub", claims(&lms, "teacher-sub", "Instructor", &address)).await).await,
    );
}

#[tokio::test]
async fn a_teaching_assistant_keeps_one_role_and_gets_each_courses_rights() {
    let lms = school("idta").await;
    let t = &lms.t;
    let registration = hub::integrations::lti::registration::registration_id(&lms.issuer, crate::lti_flow::CLIENT_ID);
    let quest = json!({"title": "Cells", "pillar": "stem", "organization_id": "lincoln", "tasks": [{"title": "Observe", "xp": 30}]});
    let quest: Value = t
        .http
        .post(t.url("/api/admin/quests"))
        .bearer_auth(&lms.admin)
        .json(&quest)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quest_id = quest["id"].as_str().unwrap().to_string();
    let members = lms.platform.set_members("course-7", vec![]);
    // Instructor in course 7 (the roster service offered); Learner in course 8, whose link leads to the quest.
    let mut teaching = claims(&lms, "ta-sub", "Instructor", "ta@lincoln.example");
    teaching[NRPS] = json!({"context_memberships_url": members, "service_versions": ["2.0"]});
    let (token, me) = lms.signed_in(launch(&lms, "ta-sub", teaching).await).await;
    assert_eq!(me["role"], "teacher");
    let lineitem = lms.platform.create_lineitem("Cells", 100.0, Some("link-8"));
    let mut learning = claims(&lms, "ta-sub", "Learner", "ta@lincoln.example");
    learning[format!("{CLAIM}context")] = json!({"id": "course-8", "label": "BIO 201", "title": "Biology II"});
    learning[format!("{CLAIM}resource_link")] = json!({"id": "link-8", "title": "Cells"});
    learning[format!("{CLAIM}custom")] = json!({"quest_id": quest_id});
    learning[AGS] = json!({"scope": [SCORE], "lineitem": lineitem,
                           "lineitems": format!("{}/lineitems", lms.platform.base_url)});
    let again = lms.session(launch(&lms, "ta-sub", learning).await).await;
    assert_eq!(
        (again["id"].clone(), again["role"].clone()),
        (me["id"].clone(), json!("teacher")),
        "one account, one role"
    );

    // Course 7: the roster is theirs to sync; course 8: not (a learner there).
    let sync = |course: &str| {
        let url = t.url(&format!(
            "/api/lti/contexts/{}/roster-sync",
            hub::integrations::lti::links::course_id(&registration, course)
        ));
        let (http, token) = (t.http.clone(), token.clone());
        async move { http.post(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(sync("course-7").await.status(), 202);
    assert_eq!(error_code(sync("course-8").await).await, (404, "course_not_found".into()));
    // Course 8's scores go to its gradebook (a Learner there); none for course 7's teaching.
    let user_id = me["id"].as_str().unwrap();
    let target =
        t.ctx.store().lti_grade_target(user_id, &quest_id).await.unwrap().expect("a grade target for course 8");
    assert_eq!(target.lineitem_url, lineitem);
    // Deep linking: an Instructor of course 7 may; as a Learner of course 8, refused.
    let mut picking = lms.claims("ta-sub", "Instructor", "LtiDeepLinkingRequest");
    picking["email"] = json!("ta@lincoln.example");
    assert_eq!(launch(&lms, "ta-sub", picking.clone()).await.status(), 200);
    picking[format!("{CLAIM}roles")] = json!(["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]);
    picking[format!("{CLAIM}context")] = json!({"id": "course-8"});
    let (status, code) = crate::lti_flow::refused(launch(&lms, "ta-sub", picking).await).await;
    assert_eq!((status, code.as_str()), (403, "deep_linking_forbidden"));
}

#[tokio::test]
async fn a_login_code_works_only_in_the_browser_that_made_the_login() {
    let lms = school("idcsrf").await;
    let t = &lms.t;
    // The attacker's own launch: its code, sent to a victim whose browser lacks the attacker's cookie.
    let launched = launch(&lms, "attacker", claims(&lms, "attacker", "Learner", "eve@lincoln.example")).await;
    let (code, binding) = launch_code(&launched);
    assert_eq!(error_code(lms.exchange(&code, None).await).await, (400, "invalid_code".into()), "no cookie");
    let other = launch(&lms, "victim", claims(&lms, "victim", "Learner", "vic@lincoln.example")).await;
    let (_, victims_binding) = launch_code(&other);
    assert_eq!(
        error_code(lms.exchange(&code, Some(&victims_binding)).await).await,
        (400, "invalid_code".into()),
        "another login's cookie"
    );
    // Refused tries do not use the code up: the browser that made the login still signs in with it.
    let r = lms.exchange(&code, Some(&binding)).await;
    assert_eq!(r.status(), 200);
    let cleared: Vec<&str> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(
        cleared.iter().any(|c| c.starts_with("__Host-hub_login_") && c.contains("=; ") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );

    // Spark's codes the same (the Node signer's token, the code exchanged elsewhere).
    let (_, secret) = t.key("SparkSsoSecret").await;
    let browser = no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 22));
    let (code, binding) =
        signed_in_code(&sso_from(t, &node_token(&secret, "spark-eve", "eve@lincoln.example"), &browser).await);
    let r = t.http.post(t.url("/spark/token")).json(&json!({"code": code})).send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_code".into()));
    assert_eq!(exchange_from(t, &browser, &code, &binding).await.status(), 200);
}

#[tokio::test]
async fn a_spent_invalid_code_budget_refuses_before_any_code_is_touched_and_locks_out_no_one_else() {
    let lms = school("idlimit").await;
    // Everyone behind one school address.
    let school_nat = no_redirects_from(std::net::Ipv4Addr::new(127, 0, 0, 23));
    let exchange = |code: String, binding: Option<String>| {
        let (client, url) = (school_nat.clone(), lms.t.url("/api/lti/token"));
        async move {
            let mut r = client.post(url).json(&json!({ "code": code }));
            if let Some(binding) = binding {
                r = r.header("cookie", binding);
            }
            r.send().await.unwrap()
        }
    };
    // Unbound guesses from the school's address spend the address's budget...
    for i in 0..20 {
        assert_eq!(error_code(exchange(format!("guess-{i}"), None).await).await, (400, "invalid_code".into()));
    }
    assert_eq!(error_code(exchange("guess".into(), None).await).await, (429, "rate_limited".into()));
    // A made-up binding buys no tries of its own: counted by the address, already spent.
    let made_up = format!("{}={}", hub::domain::auth::login_binding::login_cookie_name("guess"), "x".repeat(43));
    assert_eq!(error_code(exchange("guess".into(), Some(made_up)).await).await, (429, "rate_limited".into()));
    // ...but lock out no student: a launch's exchange is counted by its own browser binding.
    let (code, binding) =
        launch_code(&launch(&lms, "kid", claims(&lms, "kid", "Learner", "kid@lincoln.example")).await);
    assert_eq!(exchange(code, Some(binding)).await.status(), 200);
    // A browser that spent its own budget guessing is refused before its valid code is touched.
    let (code, binding) =
        launch_code(&launch(&lms, "eve", claims(&lms, "eve", "Learner", "eve@lincoln.example")).await);
    let cookie = binding.split('=').next().unwrap().to_string();
    for i in 0..20 {
        // The cookie named after each guess, with this browser's secret.
        let guess = format!("guess-{i}");
        let named = binding.replacen(&cookie, &hub::domain::auth::login_binding::login_cookie_name(&guess), 1);
        assert_eq!(error_code(exchange(guess, Some(named)).await).await, (400, "invalid_code".into()));
    }
    assert_eq!(error_code(exchange(code.clone(), Some(binding)).await).await, (429, "rate_limited".into()));
    let kept = lms.t.ctx.store().peek_code(&code, hub::integrations::lti::flow::PURPOSE).await.unwrap();
    assert!(kept.is_some(), "the refused exchange did not use the code up");
}

#[tokio::test]
async fn a_sign_in_link_leads_to_an_apps_consent_only_in_the_browser_that_asked() {
    let t = TestStack::new("idnext").await;
    let domain = domain("idnext");
    let email = format!("lee@{domain}");
    t.signed_in(&email, Role::Student).await;
    let authorize = "/api/oauth/authorize?client_id=app&response_type=code";
    // Through the API (no browser to bind): only the invitation page.
    for next in [authorize, "/auth/sign-in/confirm?code=x", "/api/observers/invitations", "//evil.example/"] {
        let r = post_json(&t, "/api/auth/email/start", None, json!({"email": email, "next": next})).await;
        assert_eq!(error_code(r).await, (400, "invalid_next".into()), "{next}");
    }

    // The sign-in page, asked from a browser, with the authorization page as next.
    let browser = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = browser.get(t.url(&format!("/auth/sign-in?next={}", urlencode(authorize)))).send().await.unwrap();
    let csrf = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let token = hidden(&page.text().await.unwrap(), "csrf");
    let form =
        |fields: &[(&str, &str)]| url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let post = |path: &str, cookie: &str, body: String| {
        browser
            .post(t.url(path))
            .header("cookie", cookie.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r =
        post("/auth/sign-in", &csrf, form(&[("email", &email), ("next", authorize), ("csrf", &token)])).await.unwrap();
    assert_eq!(r.status(), 200);
    let lax = r.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap();
        c.starts_with("__Host-hub_signin=") && c.contains("SameSite=Lax")
    });
    assert!(lax, "the sign-in form binds its link to this browser, in a cookie a link from a webmail carries");
    let signin = devstack::set_cookie(r.headers(), "__Host-hub_signin=").unwrap();
    let asker = format!("{csrf}; {signin}");
    let code = t.deliver_emails_to(&email).await.pop().expect("a sign-in link").code(&t.base, "/auth/sign-in/confirm");
    // Opened in another browser (the mail forwarded, or sent by someone else): signed in, but no further.
    let elsewhere = browser.get(t.url(&format!("/auth/sign-in/confirm?code={code}"))).send().await.unwrap();
    let other_csrf = elsewhere.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let other_token = hidden(&elsewhere.text().await.unwrap(), "csrf");
    let r = post("/auth/sign-in/confirm", &other_csrf, form(&[("code", &code), ("csrf", &other_token)])).await.unwrap();
    assert_eq!(r.status(), 200, "a page that says so, not a redirect to the app");
    assert!(r.text().await.unwrap().contains("You are signed in"));

    // Asked again, and opened in the browser that asked: on to the app's authorization page.
    let r =
        post("/auth/sign-in", &asker, form(&[("email", &email), ("next", authorize), ("csrf", &token)])).await.unwrap();
    assert_eq!(r.status(), 200);
    let code = t.deliver_emails_to(&email).await.pop().expect("a sign-in link").code(&t.base, "/auth/sign-in/confirm");
    let r = post("/auth/sign-in/confirm", &asker, form(&[("code", &code), ("csrf", &token)])).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], authorize);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A hidden field's value in a page.
fn hidden(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}
