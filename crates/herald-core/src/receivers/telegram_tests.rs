//! Telegram's bodies: HTML with the event's values escaped, the text cut to 4,096, the token
//! only in the URL; its answers.

use herald_api::EventType;

use super::*;
use crate::{load_sources, FlaggerEvent, MatchInput, PolicySet};

const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: tg, namespace: default}
stringData: {token: "123456:ABC-DEF_ghi"}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: chat, namespace: default}
spec:
  receivers:
    - name: tg
      telegram: {tokenSecretRef: {name: tg}, chatId: "-1001234567890", messageThreadId: 7}
"#;

fn set(cluster: &str) -> PolicySet {
    let mut loaded = load_sources([("p.yaml", POLICY)]);
    let set = loaded.build(cluster, "default");
    assert_eq!(loaded.problems, []);
    set
}

fn body(set: &PolicySet, message: &str) -> serde_json::Value {
    let ev = FlaggerEvent::new(
        "podinfo",
        "default",
        "Progressing",
        message,
        EventType::Warning,
        1_578_607_635_167,
    );
    let got = set.notifications(&MatchInput::event(&ev), None);
    serde_json::from_slice(&got[0].as_ref().unwrap().body).unwrap()
}

#[test]
fn an_html_message_with_the_values_escaped() {
    let set = set("prod-eu");
    let receiver = set.receiver(0, 0);
    assert_eq!(
        receiver.url.expose(),
        "https://api.telegram.org/bot123456:ABC-DEF_ghi/sendMessage"
    );
    assert_eq!(format!("{:?}", receiver.url), "[redacted]");
    let got = body(&set, "<b>x</b> & <a href=\"http://evil\">y</a>");
    assert_eq!(
        got,
        serde_json::json!({
            "chat_id": -1001234567890_i64,
            "message_thread_id": 7,
            "text": "<b>[prod-eu] podinfo.default</b>\n&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href=&quot;http://evil&quot;&gt;y&lt;/a&gt;\n\n<b>Phase:</b> Progressing\n<b>Cluster:</b> prod-eu",
            "parse_mode": "HTML"
        })
    );
}

#[test]
fn the_text_is_cut_to_4096_never_inside_an_entity() {
    let set = set("");
    let long = "&".repeat(5_000);
    let text = body(&set, &long)["text"].as_str().unwrap().to_owned();
    assert!(utf16_len(&text) <= TEXT_LIMIT, "{}", utf16_len(&text));
    assert!(utf16_len(&text) > TEXT_LIMIT - 10);
    let (kept, _) = text.split_once(TRUNCATION_NOTE).unwrap();
    assert!(kept.ends_with("&amp;"), "{}", &kept[kept.len() - 10..]);
    assert!(text.ends_with("\n\n<b>Phase:</b> Progressing"));
}

#[test]
fn answers_ok_refusals_and_retry_after() {
    let kind = Telegram {
        chat_id: ChatId::Username("@releases".into()),
        message_thread_id: None,
    };
    assert_eq!(
        kind.read_answer(br#"{"ok":true,"result":{"message_id":1}}"#),
        Answer::Delivered { posted: None }
    );
    assert_eq!(
        kind.read_answer(
            br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#
        ),
        Answer::Refused {
            detail: "Bad Request: chat not found".into()
        }
    );
    assert_eq!(kind.read_answer(b"<html>"), Answer::Unreadable);
    assert_eq!(
        kind.retry_after(br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#),
        Some(Duration::from_secs(3))
    );
    assert_eq!(kind.retry_after(b"{}"), None);
}

#[test]
fn bot_tokens() {
    assert!(is_bot_token("123456:ABC-DEF_ghi"));
    for bad in [
        "", "123456", ":abc", "12a:abc", "123:", "123:a/b", "123:a?b",
    ] {
        assert!(!is_bot_token(bad), "{bad}");
    }
}
