//! The console over plain HTTP, without a browser: a client that shows redirects instead of
//! following them, signing in (the session cookie), reading a page with that cookie, and the
//! CSRF token a page's forms carry.

use super::store::PASSWORD;

/// A client that never follows redirects (a test reads the 303 and its `Location`).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs `email` in with [`PASSWORD`]; the `Set-Cookie` header, checked, and the cookie pair to
/// send back.
pub async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let answer = http
        .post(format!("{base}/console/login"))
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303, "{email} signs in");
    let set_cookie = answer
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (set_cookie, pair)
}

/// The value of the first `name="csrf"` field of `page`.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_owned()
}

/// `GET url` with `cookie`: the status and the body.
pub async fn get_page(http: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let answer = http.get(url).header("cookie", cookie).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

/// `POST url` of `form` with `cookie` (the answer as it comes: redirects are not followed by
/// [`no_redirects`]).
pub async fn post_form<T: serde::Serialize + ?Sized>(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    cookie: &str,
    form: &T,
) -> reqwest::Response {
    http.post(url)
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}
