//! Hostile text in events over real HTTP: `herald serve` in process, every receiver kind on
//! 127.0.0.1, and the exact bytes each one gets. What an event carries (its message, phase,
//! metadata, the cluster's name) is escaped for the receiver's markup; what the policy's
//! templates say is sent as written, and `{{{value}}}` sends a value unescaped. A webhook body
//! template that lets a message add a key twice is refused, and counted.

mod common;

use std::time::Duration;

use common::slack::{FakeSlack, TOKEN};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// Mentions, links and markup for every service, and a quote that closes a JSON string.
const HOSTILE: &str = r#"<!channel> <@U123> <http://evil.example|approve> @here @all @everyone [click](http://evil) <a href=x>y</a> & *b*","admin":true,"x":""#;

fn policies(sink: &Sink, slack: &FakeSlack) -> String {
    format!(
        r##"
apiVersion: v1
kind: Secret
metadata: {{name: slack-bot, namespace: default}}
stringData:
  token: {TOKEN}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: hostile, namespace: default}}
spec:
  template:
    # The author's own markup stays; the event's values are escaped; {{{{{{...}}}}}} is raw.
    title: "<!here> *{{{{name}}}}* {{{{default metadata.owner '-'}}}}"
    text: "{{{{message}}}} | raw: {{{{{{default metadata.owner '-'}}}}}}"
  receivers:
    - name: slack
      slack: {{url: "{slack_url}"}}
    - name: bot
      slack: {{tokenSecretRef: {{name: slack-bot}}, channel: "#deploys", apiUrl: "{api}", threads: false}}
    - name: legacy
      msteams: {{url: "{legacy}", format: MessageCard}}
    - name: workflows
      msteams: {{url: "{workflows}", format: AdaptiveCard}}
    - name: discord
      discord: {{url: "{discord}"}}
    - name: gchat
      googlechat: {{url: "{gchat}", threads: false}}
    - name: rocket
      rocketchat: {{url: "{rocket}"}}
    - name: naive
      webhook:
        url: "{naive}"
        body: '{{"text": "{{{{message}}}}", "admin": false}}'
    - name: safe
      webhook:
        url: "{safe}"
        body: '{{"text": {{{{json message}}}}, "admin": false}}'
"##,
        slack_url = sink.url("/slack"),
        api = slack.api_url(),
        legacy = sink.url("/legacy"),
        workflows = sink.url("/workflows"),
        discord = sink.url("/discord"),
        gchat = sink.url("/gchat"),
        rocket = sink.url("/rocket"),
        naive = sink.url("/naive"),
        safe = sink.url("/safe"),
    )
}

#[tokio::test]
async fn every_receiver_gets_event_text_escaped_for_its_markup() {
    let sink = Sink::start().await;
    let slack = FakeSlack::start().await;
    let dir = PolicyDir::new(&[("hostile.yaml", &policies(&sink, &slack))]);
    let mut opts = options(dir.path());
    opts.files.cluster = "<!subteam^S1>".to_owned();
    let server = herald::serve::start(opts).await.unwrap();

    let body = serde_json::to_string(&json!({
        "name": "podinfo",
        "namespace": "default",
        "phase": "<@U999>",
        "metadata": {
            "eventMessage": HOSTILE,
            "eventType": "Warning",
            "owner": "<@U42> [me](http://evil)",
            "timestamp": "1700000000000"
        }
    }))
    .unwrap();
    // Nine receivers; the naive body fails to render, so eight are queued.
    assert_eq!(
        post_event(server.addr, "/events", &body).await,
        (202, json!({"deliveries": 8}))
    );
    sink.wait_for(7, WAIT).await;
    let bot = slack.wait_for(1).await;
    let text = wait_for_metric(server.addr, "herald_render_failures_total", 1.0, WAIT).await;
    assert_eq!(metric(&text, "herald_render_failures_total"), 1.0);

    let body_of = |path: &str| {
        let got = sink.received_on(path);
        assert_eq!(got.len(), 1, "{path}");
        got[0].text()
    };
    let expected = [
        (
            "/slack",
            r##"{"attachments":[{"color":"warning","fallback":"<!here> *podinfo* &lt;@U42&gt; [me](http://evil) &lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @here @all @everyone [click](http://evil) &lt;a href=x&gt;y&lt;/a&gt; &amp; *b*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","author_name":"<!here> *podinfo* &lt;@U42&gt; [me](http://evil)","text":"&lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @here @all @everyone [click](http://evil) &lt;a href=x&gt;y&lt;/a&gt; &amp; *b*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","mrkdwn_in":["text"],"fields":[{"title":"Phase","value":"&lt;@U999&gt;","short":true},{"title":"Cluster","value":"&lt;!subteam^S1&gt;","short":true}],"ts":1700000000}]}"##,
        ),
        (
            "/legacy",
            r###"{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"FFA500","summary":"<!here> *podinfo* \\<@U42\\> \\[me\\]\\(http://evil\\) \\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @here @all @everyone \\[click\\]\\(http://evil\\) \\<a href=x\\>y\\</a\\> & \\*b\\*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","sections":[{"activityTitle":"\\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @here @all @everyone \\[click\\]\\(http://evil\\) \\<a href=x\\>y\\</a\\> & \\*b\\*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","activitySubtitle":"<!here> *podinfo* \\<@U42\\> \\[me\\]\\(http://evil\\)","facts":[{"name":"Phase","value":"\\<@U999\\>"},{"name":"Cluster","value":"\\<!subteam^S1\\>"}]}]}"###,
        ),
        (
            "/workflows",
            r###"{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json","type":"AdaptiveCard","version":"1.4","msteams":{"width":"Full"},"body":[{"type":"TextBlock","text":"<!here> *podinfo* \\<@U42\\> \\[me\\]\\(http://evil\\)","weight":"Bolder","size":"Medium","color":"warning","wrap":true},{"type":"TextBlock","text":"\\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @here @all @everyone \\[click\\]\\(http://evil\\) \\<a href=x\\>y\\</a\\> & \\*b\\*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","wrap":true},{"type":"FactSet","facts":[{"title":"Phase","value":"\\<@U999\\>"},{"title":"Cluster","value":"\\<!subteam^S1\\>"}]}]}}]}"###,
        ),
        (
            "/discord",
            r###"{"embeds":[{"title":"<!here> *podinfo* \\<@U42\\> \\[me\\]\\(http://evil\\)","description":"\\<!channel\\> \\<@U123\\> \\<http://evil.example\\|approve\\> @here @all @everyone \\[click\\]\\(http://evil\\) \\<a href=x\\>y\\</a\\> & \\*b\\*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","color":16753920,"fields":[{"name":"Phase","value":"\\<@U999\\>","inline":true},{"name":"Cluster","value":"\\<!subteam^S1\\>","inline":true}],"timestamp":"2023-11-14T22:13:20Z"}],"allowed_mentions":{"parse":[]}}"###,
        ),
        (
            "/gchat",
            r###"{"fallbackText":"<!here> *podinfo* &lt;@U42&gt; [me](http://evil) &lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @here @all @everyone [click](http://evil) &lt;a href=x&gt;y&lt;/a&gt; &amp; *b*&quot;,&quot;admin&quot;:true,&quot;x&quot;:&quot; | raw: <@U42> [me](http://evil)","cardsV2":[{"cardId":"herald","card":{"header":{"title":"<!here> *podinfo* &lt;@U42&gt; [me](http://evil)"},"sections":[{"widgets":[{"textParagraph":{"text":"&lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|approve&gt; @here @all @everyone [click](http://evil) &lt;a href=x&gt;y&lt;/a&gt; &amp; *b*&quot;,&quot;admin&quot;:true,&quot;x&quot;:&quot; | raw: <@U42> [me](http://evil)"}},{"decoratedText":{"topLabel":"Phase","text":"<font color=\"#FFA500\">&lt;@U999&gt;</font>"}},{"decoratedText":{"topLabel":"Cluster","text":"&lt;!subteam^S1&gt;"}}]}]}}]}"###,
        ),
        (
            "/rocket",
            r###"{"text":"<!here> *podinfo* &lt;@~U42&gt; [me](http://evil)","attachments":[{"text":"&lt;!channel&gt; &lt;@~U123&gt; &lt;http://evil.example|approve&gt; @~here @~all @~everyone [click](http://evil) &lt;a href=x&gt;y&lt;/a&gt; &amp; *b*\",\"admin\":true,\"x\":\" | raw: <@U42> [me](http://evil)","color":"#FFA500","fields":[{"title":"Phase","value":"&lt;@~U999&gt;","short":true},{"title":"Cluster","value":"&lt;!subteam^S1&gt;","short":true}],"ts":"2023-11-14T22:13:20Z"}]}"###,
        ),
        (
            "/safe",
            r###"{"text":"<!channel> <@U123> <http://evil.example|approve> @here @all @everyone [click](http://evil) <a href=x>y</a> & *b*\",\"admin\":true,\"x\":\"","admin":false}"###,
        ),
    ];
    for (path, want) in expected {
        // `@~` stands for an `@` followed by a zero-width space (U+200B).
        assert_eq!(body_of(path), want.replace("@~", "@\u{200B}"), "{path}");
    }
    // The bot posts the webhook's body with its channel.
    let mut want_bot: serde_json::Value = serde_json::from_str(expected[0].1).unwrap();
    want_bot["channel"] = json!("#deploys");
    assert_eq!(bot[0].body, want_bot);
    assert!(sink.received_on("/naive").is_empty());
    server.stop().await.unwrap();
}

/// `herald check` warns (and still passes) when a webhook body puts a value inside a JSON
/// string; `{{json value}}` outside quotes draws no warning.
#[test]
fn check_warns_about_values_inside_json_strings() {
    let policy = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: hooks, namespace: default}\nspec:\n  receivers:\n    - name: naive\n      webhook:\n        url: https://hooks.example.com/1\n        body: '{\"text\": \"{{message}}\", \"who\": \"{{{name}}}.{{namespace}}\"}'\n    - name: safe\n      webhook:\n        url: https://hooks.example.com/2\n        body: '{\"text\": {{json message}}}'\n";
    let dir = PolicyDir::new(&[("hooks.yaml", policy)]);
    let file = dir.path().join("hooks.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("check")
        .arg("--policies")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let f = file.display();
    let warning = |tag: &str| {
        format!("warning: {f} (document 1) NotificationPolicy default/hooks: spec.receivers[0].webhook.body: {tag} is inside a JSON string: a value with a quote breaks the body or adds keys to it; write {{{{json ...}}}} in place of the quoted string")
    };
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        [
            warning("{{message}}"),
            warning("{{{name}}}"),
            warning("{{namespace}}"),
            "ok: 1 policies, 0 secrets in 1 files".to_owned(),
        ]
    );
}
