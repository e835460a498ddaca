//! Fresh PostgreSQL databases for tests: one per test, dropped (with its
//! connections) when the test ends.
//!
//! The server is `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`.
//! Without a reachable server a test prints `SKIP` and passes, unless `CI`
//! is set, where it fails.

use postgres::{Client, Config, NoTls};

pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh database, dropped (with its connections) when this goes out of scope.
pub struct TestDb {
    pub name: String,
    pub config: Config,
}

/// Runs blocking PostgreSQL client work off any async runtime (the
/// synchronous client refuses to run inside one).
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("PostgreSQL helper thread"))
}

impl TestDb {
    /// `None` (after printing `SKIP`) when no server is reachable outside CI.
    pub fn create() -> Option<TestDb> {
        off_runtime(|| {
            let url = server_url();
            let mut admin = match Client::connect(&url, NoTls) {
                Ok(client) => client,
                Err(error) => {
                    if std::env::var_os("CI").is_some() {
                        panic!("PostgreSQL not reachable at {url}: {error}");
                    }
                    println!("SKIP: PostgreSQL not reachable at {url}: {error}");
                    return None;
                }
            };
            let name = format!("credstack_test_{:032x}", ulid::Ulid::generate().0);
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create the test database");
            let mut config: Config = url.parse().expect("a valid DATABASE_URL");
            config.dbname(&name);
            Some(TestDb { name, config })
        })
    }

    /// A URL for this database, for `serve --database-url`.
    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
        url.set_path(&self.name);
        url.to_string()
    }

    pub fn connect(&self) -> Client {
        let config = self.config.clone();
        off_runtime(move || config.connect(NoTls).expect("connect to the test database"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        off_runtime(move || {
            if let Ok(mut admin) = Client::connect(&server_url(), NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}
