//! A write whose outcome the gateway cannot know is said to be unknown, and one that
//! surely did not happen is said to be retryable: SQLite held by another writer past
//! its busy timeout, and a PostgreSQL COMMIT that does not answer in time but is
//! applied afterwards (the node then converges through the change feed).

use crate::support::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sqlite_file_is_a_retryable_503_and_nothing_changes() {
    let g = TestGateway::start().await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    // another process's writer holds the file's write lock past the busy timeout
    let other = rusqlite::Connection::open(&g.store_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{body}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["staging"]["version"], "v1", "{snap}");
    // and the same move goes through once the file is free
    let (status, body) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_commit_without_an_answer_is_unknown_and_the_node_converges() {
    let _pg = PG_LOCK.read().await;
    let Some(url) = postgres_db("outcome::postgres_commit_unknown").await else {
        return;
    };
    let g = TestGateway::builder().store(&url).start().await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    // a deferred trigger makes the next COMMIT take longer than the store's I/O
    // timeout: the gateway gives up waiting, the database commits afterwards
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sleep_s = switchyard::store::postgres::IO_TIMEOUT.as_secs() + 2;
    db.batch_execute(&format!(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep({sleep_s}); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON history
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();"
    ))
    .await
    .unwrap();
    let (status, body) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("may have been applied"), "{message}");
    assert!(!message.contains("nothing was changed"), "{message}");
    db.batch_execute("DROP TRIGGER slow_commit ON history")
        .await
        .unwrap();

    // the commit did happen; the node learns it from the change feed
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually("the store says v2", || async {
        let (_, snap) = g.get_admin("/v1/agents/bot").await;
        snap["environments"]["staging"]["version"] == "v2"
    })
    .await;
    eventually("the node serves v2", || async {
        let r = get(&g.url("/"), &[("authorization", auth.as_str())]).await;
        r.status == 200 && r.json()["version"] == "v2"
    })
    .await;
    // the history holds the move once
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    let to_v2 = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["version"] == "v2")
        .count();
    assert_eq!(to_v2, 1, "{h}");
}
