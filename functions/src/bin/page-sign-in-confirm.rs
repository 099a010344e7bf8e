#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), hub::entry::Error> {
    hub::entry::run(hub::functions::PAGE_SIGN_IN_CONFIRM).await
}
