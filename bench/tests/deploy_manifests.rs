//! The deployments as files (issue 25, item 4): docker-compose.yml (the contest's two),
//! deploy/compose-scale.yml (`--scale`, Swarm) and deploy/k8s/ are parsed and checked for
//! what a typo would break without a word from the engine: the limits, the seccomp profile,
//! a journal volume per replica, and the env that wires peers and the lb together. Every env
//! var they set must be one the binaries document (docs/architecture.md's tables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A compose file with its `<<: *anchor` merges applied, as the engine reads it.
fn yaml(path: &str) -> Value {
    let mut v: Value = serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    v.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
    v
}

fn docs(path: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// `${VAR:-default}` as the engine reads it with VAR unset.
fn defaulted(text: &str) -> String {
    match text.split_once("${") {
        Some((head, rest)) => {
            let (expr, tail) = rest.split_once('}').expect("closing brace");
            let default = expr.split_once(":-").map_or("", |(_, d)| d);
            format!("{head}{default}{}", defaulted(tail))
        }
        None => text.to_owned(),
    }
}

fn cpus(v: &Value) -> f64 {
    let text = defaulted(&match v {
        Value::String(t) => t.clone(),
        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
    });
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().unwrap() / 1000.0,
        None => text.parse().unwrap(),
    }
}

fn megabytes(v: &Value) -> f64 {
    let text = defaulted(s(v));
    let (n, unit) = text.split_at(text.find(|c: char| c.is_alphabetic()).expect("unit"));
    let n: f64 = n.parse().unwrap();
    match unit {
        "M" | "m" => n,
        "Mi" => n * 1.048_576,
        "G" | "g" => n * 1000.0,
        other => panic!("unit {other}"),
    }
}

/// Env var names the docs' tables list (`| `NAME` |`).
fn documented_vars() -> Vec<String> {
    read("docs/architecture.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    let env = service["environment"]
        .as_mapping()
        .expect("environment as a map");
    env.iter()
        .filter(|(k, _)| s(k) != "<<")
        .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
        .collect()
}

fn check_vars_documented(file: &str, env: &BTreeMap<String, String>) {
    let known = documented_vars();
    for name in env.keys() {
        assert!(
            name == "NO_COLOR" || known.contains(name),
            "{file}: {name} is not a documented env var"
        );
    }
}

/// The seccomp profile a compose service names allows io_uring (the path is relative to the
/// working directory, the repository's root, whichever file names it).
fn check_seccomp(file: &str, service: &Value) {
    let opt = service["security_opt"][0].as_str().expect("security_opt");
    let path = opt.strip_prefix("seccomp=").expect("a seccomp profile");
    let profile = read(path);
    let json: serde_json::Value = serde_json::from_str(&profile).expect("profile json");
    let allowed = json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap())
        .any(|n| n == "io_uring_setup");
    assert!(allowed, "{file}: {path} does not allow io_uring_setup");
}

fn port_of(listen: &str) -> &str {
    listen.rsplit_once(':').expect("host:port").1
}

#[test]
fn the_contest_compose_file_is_two_backends_within_the_limits() {
    let file = "docker-compose.yml";
    let c = yaml(file);
    let services = c["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(s).collect();
    assert_eq!(names, ["lb", "backend-1", "backend-2"]);
    let (mut cpu, mut mem) = (0.0, 0.0);
    for (_, svc) in services {
        let limits = &svc["deploy"]["resources"]["limits"];
        cpu += cpus(&limits["cpus"]);
        mem += megabytes(&limits["memory"]);
        check_seccomp(file, svc);
        check_vars_documented(file, &env_of(svc));
    }
    assert!(cpu <= 1.5 && mem <= 350.0, "{cpu} CPU, {mem} MB");
    let env = |n: &str| env_of(&c["services"][n]);
    let (b1, b2) = (env("backend-1"), env("backend-2"));
    assert_eq!(b1["PEERS"], b2["PEER_LISTEN"]);
    assert_eq!(b2["PEERS"], b1["PEER_LISTEN"]);
    assert_eq!(
        env("lb")["BACKENDS"],
        format!("{},{}", b1["LISTEN"], b2["LISTEN"])
    );
    // A journal each, on a volume of its own mounted where DATA_DIR points.
    for n in ["backend-1", "backend-2"] {
        let mounts: Vec<&str> = c["services"][n]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert!(mounts.contains(&format!("{n}-data:{}", env(n)["DATA_DIR"]).as_str()));
    }
}

#[test]
fn the_scalable_compose_file_wires_replicas_by_name_not_by_list() {
    let file = "deploy/compose-scale.yml";
    let c = yaml(file);
    let backend = &c["services"]["backend"];
    let lb = &c["services"]["lb"];
    // Replicas of one service: no fixed name that two of them would share.
    assert!(backend.get("hostname").is_none() && backend.get("container_name").is_none());
    let env = env_of(backend);
    let lb_env = env_of(lb);
    check_vars_documented(file, &env);
    check_vars_documented(file, &lb_env);
    check_seccomp(file, backend);
    check_seccomp(file, lb);

    // Peers: a name only the peers' network answers, at the port every replica answers its
    // peers on (never the public one).
    let peers = env["PEERS"].strip_prefix("dns:").expect("PEERS=dns:...");
    let (alias, port) = peers.rsplit_once(':').unwrap();
    assert_eq!(port, port_of(&env["PEER_LISTEN"]));
    assert_ne!(port, port_of(&env["LISTEN"]));
    let aliases = &backend["networks"]["peers"]["aliases"];
    assert!(aliases.as_sequence().unwrap().iter().any(|a| s(a) == alias));
    assert_eq!(s(&backend["deploy"]["endpoint_mode"]), "dnsrr");
    assert!(lb["networks"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|n| s(n) == "peers"));
    assert_eq!(
        lb_env["BACKENDS"],
        format!("dns:{alias}:{}", port_of(&env["LISTEN"])),
        "relay mode reaches the same replicas, on their public port"
    );

    // Hand-over: each replica names its socket after its host, in the directory the lb reads.
    let handoff = env["HANDOFF_LISTEN"].strip_prefix("unix:").unwrap();
    let (dir, name) = handoff.rsplit_once('/').unwrap();
    assert_eq!(name, "{hostname}.handoff.sock");
    assert_eq!(lb_env["HANDOFF_DIR"], dir);
    let mounts = |svc: &Value| -> Vec<String> {
        svc["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| s(v).to_owned())
            .collect()
    };
    assert!(mounts(backend).contains(&format!("sockets:{dir}")));
    assert!(mounts(lb).contains(&format!("sockets:{dir}")));
    // The journal: an anonymous volume, one per container, where DATA_DIR points.
    assert!(mounts(backend).contains(&env["DATA_DIR"]));

    // The defaults (two replicas) hold the contest's limits.
    let limits = |svc: &Value| {
        let l = &svc["deploy"]["resources"]["limits"];
        (cpus(&l["cpus"]), megabytes(&l["memory"]))
    };
    let replicas = backend["deploy"]["replicas"].as_u64().unwrap() as f64;
    let ((lc, lm), (bc, bm)) = (limits(lb), limits(backend));
    assert!(lc + replicas * bc <= 1.5 && lm + replicas * bm <= 350.0);
}

#[test]
fn the_kubernetes_manifests_give_each_replica_an_identity_and_a_volume() {
    let mut all = docs("deploy/k8s/backend.yaml");
    all.extend(docs("deploy/k8s/lb.yaml"));
    let find = |kind: &str, name: &str| -> Value {
        all.iter()
            .find(|d| s(&d["kind"]) == kind && s(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let set = find("StatefulSet", "rinha-backend");
    let headless_name = s(&set["spec"]["serviceName"]).to_owned();
    let headless = find("Service", &headless_name);
    assert_eq!(s(&headless["spec"]["clusterIP"]), "None");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"],
        Value::Bool(true)
    );
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&headless["spec"]["selector"], labels);

    let env_list = |pod: &Value| -> BTreeMap<String, String> {
        pod["containers"][0]["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (s(&e["name"]).to_owned(), s(&e["value"]).to_owned()))
            .collect()
    };
    let pod = &set["spec"]["template"]["spec"];
    let env = env_list(pod);
    check_vars_documented("backend.yaml", &env);
    let peer_port = headless["spec"]["ports"][0]["port"].as_u64().unwrap();
    let client_port = headless["spec"]["ports"][1]["port"].as_u64().unwrap();
    assert_eq!(env["PEERS"], format!("dns:{headless_name}:{peer_port}"));
    assert_eq!(port_of(&env["PEER_LISTEN"]), peer_port.to_string());
    assert_eq!(port_of(&env["LISTEN"]), client_port.to_string());

    // The journal on a volume of each replica's own, where DATA_DIR points.
    let claim = s(&set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]);
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(
        (s(&mount["name"]), s(&mount["mountPath"])),
        (claim, env["DATA_DIR"].as_str())
    );

    let lb = find("Deployment", "rinha-lb");
    let lb_pod = &lb["spec"]["template"]["spec"];
    let lb_env = env_list(lb_pod);
    check_vars_documented("lb.yaml", &lb_env);
    assert_eq!(
        (lb_env["LB_MODE"].as_str(), lb_env["BACKENDS"].as_str()),
        (
            "relay",
            format!("dns:{headless_name}:{client_port}").as_str()
        )
    );
    let public = find("Service", "rinha");
    assert_eq!(public["spec"]["ports"][0]["port"].as_u64(), Some(9999));
    assert_eq!(
        &public["spec"]["selector"],
        &lb["spec"]["template"]["metadata"]["labels"]
    );

    // Limits and the seccomp profile on every pod; two replicas and the lb within 1.5 / 350.
    let mut total = (0.0, 0.0);
    for (spec, times) in [
        (pod, set["spec"]["replicas"].as_u64().unwrap() as f64),
        (lb_pod, 1.0),
    ] {
        let profile = &spec["securityContext"]["seccompProfile"];
        assert_eq!(s(&profile["type"]), "Localhost");
        assert!(s(&profile["localhostProfile"]).ends_with("seccomp-io_uring.json"));
        let limits = &spec["containers"][0]["resources"]["limits"];
        total.0 += times * cpus(&limits["cpu"]);
        total.1 += times * megabytes(&limits["memory"]);
    }
    assert!(total.0 <= 1.5 && total.1 <= 350.0 * 1.05, "{total:?}");
}
