//! What `herald check` reports for the settings of the kinds added after `validation.rs`
//! (Alertmanager, Telegram, Webex, Grafana): one row per mistake, the field it names and its message,
//! and that no credential is echoed.

mod common;

use common::*;

/// A Secret `creds` (its keys as given), then a policy `default/x` with one receiver.
fn with_receiver(secret: &str, receiver: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: default}}\nstringData: {{{secret}}}\n---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {{name: x, namespace: default}}\nspec:\n  receivers:\n    - name: r\n{receiver}"
    )
}

/// `(what, secret keys, receiver YAML, the problems as (path, message))`.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const R: &str = "spec.receivers[0]";

const ROWS: &[Row] = &[
    (
        "alertmanager: a valid one",
        "password: pw",
        "      alertmanager:\n        url: http://am:9093\n        basicAuth: {username: herald, passwordSecretRef: {name: creds}}\n",
        &[],
    ),
    (
        "alertmanager: no address",
        "",
        "      alertmanager: {labels: {team: a}}\n",
        &[("alertmanager", "set exactly one of url, secretRef")],
    ),
    (
        "alertmanager: labels Herald sets, bad names, empty values",
        "",
        "      alertmanager:\n        url: http://am:9093\n        alertname: \"\"\n        labels: {canary: x, 2x: y, __name__: z, team: \"\"}\n",
        &[
            ("alertmanager.alertname", "must not be empty"),
            ("alertmanager.labels.2x", "a label name is letters, digits and '_', not starting with a digit or '__'"),
            ("alertmanager.labels.__name__", "a label name is letters, digits and '_', not starting with a digit or '__'"),
            ("alertmanager.labels.canary", "set by Herald (alertname and severity have settings of their own)"),
            ("alertmanager.labels.team", "must not be empty"),
        ],
    ),
    (
        "alertmanager: both credentials, a bad generator URL",
        "token: t0k3n",
        "      alertmanager:\n        url: http://am:9093\n        generatorUrl: flagger/canaries\n        basicAuth: {username: \"a:b\", passwordSecretRef: {name: creds}}\n        bearerTokenSecretRef: {name: creds}\n",
        &[
            ("alertmanager.generatorUrl", "must be an http:// or https:// URL with a host"),
            ("alertmanager", "set at most one of basicAuth, bearerTokenSecretRef"),
        ],
    ),
    (
        "alertmanager: a repeat too often",
        "",
        "      alertmanager: {url: \"http://am:9093\", resendInterval: 500ms}\n",
        &[("alertmanager.resendInterval", "must be at least 1s")],
    ),
    (
        "alertmanager: a repeat that is no duration",
        "",
        "      alertmanager: {url: \"http://am:9093\", resendInterval: soon}\n",
        &[("alertmanager.resendInterval", "\"soon\" is not a duration such as 30s, 10m or 1h30m")],
    ),
    (
        "alertmanager: a missing password key, a bad URL in a Secret",
        "address: am-SECRET:9093",
        "      alertmanager:\n        secretRef: {name: creds}\n        basicAuth: {username: herald, passwordSecretRef: {name: creds}}\n",
        &[
            ("alertmanager.basicAuth.passwordSecretRef", "Secret default/creds has no key \"password\""),
            ("alertmanager.secretRef", "must be an http:// or https:// URL with a host"),
        ],
    ),
    (
        "telegram: a valid one",
        "token: \"123:abc\"",
        "      telegram: {tokenSecretRef: {name: creds}, chatId: \"@releases\"}\n",
        &[],
    ),
    (
        "telegram: nothing set",
        "",
        "      telegram: {apiUrl: telegram.local}\n",
        &[
            ("telegram.apiUrl", "must be an http:// or https:// URL with a host"),
            ("telegram.chatId", "required: the chat's ID or @username"),
            ("telegram.tokenSecretRef", "required: the Secret key holding the bot's token"),
        ],
    ),
    (
        "telegram: a chat that is no ID, a token that is no bot token",
        "token: SECRET/x",
        "      telegram: {tokenSecretRef: {name: creds}, chatId: releases}\n",
        &[
            ("telegram.chatId", "a chat ID is a number (-1001234567890) or a channel's @username"),
            ("telegram.tokenSecretRef", "a bot token is the bot's ID, ':' and letters, digits, '-' or '_'"),
        ],
    ),
    (
        "telegram: a missing Secret key",
        "",
        "      telegram: {tokenSecretRef: {name: creds, key: bot}, chatId: \"-100\"}\n",
        &[("telegram.tokenSecretRef", "Secret default/creds has no key \"bot\"")],
    ),
    (
        "webex: a valid one",
        "token: t0k3n",
        "      webex: {tokenSecretRef: {name: creds}, roomId: Y2lz}\n",
        &[],
    ),
    (
        "webex: nothing set",
        "",
        "      webex: {roomId: \"\", apiUrl: \"ftp://webex\"}\n",
        &[
            ("webex.apiUrl", "must be an http:// or https:// URL with a host"),
            ("webex.roomId", "required: the room's ID"),
            ("webex.tokenSecretRef", "required: the Secret key holding the bot's access token"),
        ],
    ),
    (
        "webex: a token of two lines",
        "token: \"t0k3n\\nSECRET\"",
        "      webex: {tokenSecretRef: {name: creds}, roomId: Y2lz}\n",
        &[("webex.tokenSecretRef", "the token must be one line of visible ASCII")],
    ),
    (
        "grafana: a valid one",
        "token: glsa_x",
        "      grafana: {url: \"https://grafana\", tokenSecretRef: {name: creds}, dashboardUid: d, panelId: 2}\n",
        &[],
    ),
    (
        "grafana: a panel without its dashboard, an empty tag, no token",
        "",
        "      grafana: {url: \"https://grafana\", panelId: 2, tags: [a, \"\"]}\n",
        &[
            ("grafana.panelId", "needs dashboardUid: a panel is a dashboard's"),
            ("grafana.tags[1]", "must not be empty"),
            ("grafana.tokenSecretRef", "required: the Secret key holding a service account token"),
        ],
    ),
];

#[test]
fn each_mistake_names_its_field() {
    for (what, secret, receiver, expected) in ROWS {
        let yaml = with_receiver(secret, receiver);
        let (loaded, set) = load_and_build(&[("p.yaml", &yaml)]);
        let got: Vec<(String, String)> = loaded
            .problems
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(path, message)| (format!("{R}.{path}"), (*message).to_owned()))
            .collect();
        assert_eq!(got, expected, "{what}");
        assert_eq!(
            set.policies().len(),
            usize::from(expected.is_empty()),
            "{what}"
        );
        let shown = format!("{:?}", loaded.problems);
        assert!(
            !shown.contains("SECRET") && !shown.contains("t0k3n"),
            "{what}: {shown}"
        );
    }
}
