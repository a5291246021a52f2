#!/usr/bin/env python3
"""Checks docker/k8s/, docker/compose.yaml and docker/Dockerfile for what a
deployment needs and for agreement with one another, without an engine or a
cluster: every program has a workload and a Service whose ports reach its
container, the gateway runs several replicas and finds each backend at an
address that exists, the file backend keeps its files on a claimed volume,
every container has probes, resource bounds and a non-root user, the token
comes from a Secret, and compose publishes only the gateway, on loopback;
docker/stack.yaml is laid out for a swarm (dnsrr, global gateway in host mode,
replicas, drains under the grace periods), the k8s backends the gateway
balances are headless with budgets and autoscaling.

usage: check_manifests.py SOURCE_DIR   (exit 0 when every check passes)
"""
import os
import re
import sys

import yaml

BACKENDS = {"echo": "TCP", "time": "UDP", "exec": "TCP", "file": "TCP", "chat": "TCP"}
PROGRAMS = ["gateway"] + list(BACKENDS)
BINARY = {"gateway": "sockgate", **{b: "sockgate-" + b for b in BACKENDS}}

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
    return ok


def quantity(text):
    """A Kubernetes quantity (cpu "500m", memory "128Mi") as a float."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not m:
        raise ValueError("bad quantity %r" % text)
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    if m.group(2) not in units:
        raise ValueError("bad unit in %r" % text)
    return float(m.group(1)) * units[m.group(2)]


def flag_value(args, flag):
    """The value of --flag VALUE or --flag=VALUE in an argument list, else None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def load_k8s(k8s_dir):
    docs = {}
    kust = yaml.safe_load(open(os.path.join(k8s_dir, "kustomization.yaml")))
    files = sorted(f for f in os.listdir(k8s_dir) if f.endswith(".yaml") and f != "kustomization.yaml")
    check(sorted(kust.get("resources", [])) == files,
          "kustomization.yaml lists exactly the manifests in docker/k8s (%s)" % files)
    for f in files:
        for d in yaml.safe_load_all(open(os.path.join(k8s_dir, f))):
            if d is None:
                continue
            name = (d.get("metadata") or {}).get("name")
            check(d.get("apiVersion") and d.get("kind") and name, "%s: a document lacks apiVersion, kind or name" % f)
            check((d["kind"], name) not in docs, "%s: %s/%s defined twice" % (f, d["kind"], name))
            docs[(d["kind"], name)] = d
    return docs


def container_ports(c):
    return {p.get("name"): (p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])}


def resolve_port(c, port):
    """A probe's or Service's target port (name or number) as (number, protocol), or None."""
    ports = container_ports(c)
    if isinstance(port, str):
        return ports.get(port)
    for num, proto in ports.values():
        if num == port:
            return num, proto
    return None


def check_probe(where, c, probe):
    if not check(isinstance(probe, dict), "%s: probe missing" % where):
        return
    if "httpGet" in probe:
        check(resolve_port(c, probe["httpGet"]["port"]) is not None, "%s: httpGet port is not a container port" % where)
        check(probe["httpGet"].get("path", "").startswith("/"), "%s: httpGet needs a path" % where)
    elif "tcpSocket" in probe:
        rp = resolve_port(c, probe["tcpSocket"]["port"])
        check(rp is not None and rp[1] == "TCP", "%s: tcpSocket port is not a TCP container port" % where)
    elif "exec" in probe:
        check(bool(probe["exec"].get("command")), "%s: exec probe without a command" % where)
    else:
        check(False, "%s: probe has no handler" % where)


def check_container(where, pod, c):
    check(bool(c.get("image")), "%s: no image" % where)
    for kind in ("readinessProbe", "livenessProbe"):
        check_probe("%s %s" % (where, kind), c, c.get(kind))
    res = c.get("resources", {})
    for r in ("cpu", "memory"):
        req = res.get("requests", {}).get(r)
        lim = res.get("limits", {}).get(r)
        if check(req is not None and lim is not None, "%s: %s request and limit" % (where, r)):
            check(quantity(req) <= quantity(lim), "%s: %s request %s exceeds limit %s" % (where, r, req, lim))
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "%s: runAsNonRoot" % where)
    check(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, "%s: runAsUser 0" % where)
    check(csc.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation false" % where)


def check_k8s(src):
    docs = load_k8s(os.path.join(src, "docker", "k8s"))
    services = {n: d for (k, n), d in docs.items() if k == "Service"}
    secrets = {n: d for (k, n), d in docs.items() if k == "Secret"}
    containers = {}
    for prog in PROGRAMS:
        kind = "StatefulSet" if prog == "file" else "Deployment"
        w = docs.get((kind, prog))
        if not check(w is not None, "k8s: %s %s exists" % (kind, prog)):
            continue
        tmpl = w["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        sel = w["spec"]["selector"]["matchLabels"]
        check(sel and sel.items() <= labels.items(), "k8s: %s selector matches its pod labels" % prog)
        pod = tmpl["spec"]
        c = next((c for c in pod["containers"] if (c.get("args") or c.get("command") or [None])[0] == BINARY[prog]), None)
        if not check(c is not None, "k8s: %s runs %s" % (prog, BINARY[prog])):
            continue
        containers[prog] = c
        check_container("k8s %s" % prog, pod, c)
        args = c.get("args") or c.get("command")
        listen = flag_value(args, "--listen")
        if check(listen is not None and listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"),
                 "k8s: %s listens on a wildcard address (%s)" % (prog, listen)):
            check(any(p == port_of(listen) for p, _ in container_ports(c).values()),
                  "k8s: %s container port matches --listen %s" % (prog, listen))
        svc = services.get(prog)
        if check(svc is not None, "k8s: Service %s exists" % prog):
            check(svc["spec"]["selector"].items() <= labels.items(), "k8s: Service %s selects %s's pods" % (prog, prog))
            for sp in svc["spec"]["ports"]:
                rp = resolve_port(c, sp.get("targetPort", sp["port"]))
                check(rp is not None and rp[1] == sp.get("protocol", "TCP"),
                      "k8s: Service %s port %s reaches a %s container port" % (prog, sp["port"], sp.get("protocol", "TCP")))
        if prog == "gateway":
            check(w["spec"].get("replicas", 1) >= 2, "k8s: gateway runs at least 2 replicas")
            hpa = docs.get(("HorizontalPodAutoscaler", "gateway"))
            if hpa:
                check(hpa["spec"].get("minReplicas", 1) >= 2, "k8s: gateway autoscaler keeps at least 2 replicas")
        elif prog == "chat":
            # Messages live in the process: two chats would be two rooms.
            check(w["spec"].get("replicas", 1) == 1, "k8s: exactly one chat replica")
            check(w["spec"].get("strategy", {}).get("type") == "Recreate", "k8s: chat rolls out by Recreate")
        else:
            check(w["spec"].get("replicas", 1) >= 1, "k8s: %s runs" % prog)

    gw = containers.get("gateway")
    if gw:
        env = {e["name"]: e for e in gw.get("env", [])}
        for b, proto in BACKENDS.items():
            e = env.get("SOCKGATE_" + b.upper(), {})
            addr = e.get("value", "")
            host = addr.rsplit(":", 1)[0] if ":" in addr else ""
            svc = services.get(host)
            ok = svc is not None and any(p["port"] == port_of(addr) and p.get("protocol", "TCP") == proto
                                         for p in svc["spec"]["ports"])
            check(ok, "k8s: gateway's SOCKGATE_%s=%s is a %s port of a Service" % (b.upper(), addr, proto))
        ref = (env.get("SOCKGATE_TOKEN", {}).get("valueFrom") or {}).get("secretKeyRef")
        if check(ref is not None, "k8s: gateway takes SOCKGATE_TOKEN from a Secret"):
            sec = secrets.get(ref["name"])
            check(sec is not None and ref["key"] in {**sec.get("data", {}), **sec.get("stringData", {})},
                  "k8s: Secret %s holds key %s" % (ref["name"], ref["key"]))

    # Issue 21: the gateway balances over the stateless backends' pods itself, and every program drains in time.
    for b in ("echo", "time", "exec"):
        svc = services.get(b)
        check(svc is not None and svc["spec"].get("clusterIP") == "None",
              "k8s: %s's Service is headless (the gateway balances over its pods)" % b)
        check(docs.get(("PodDisruptionBudget", b)) is not None, "k8s: %s has a PodDisruptionBudget" % b)
    check(docs.get(("HorizontalPodAutoscaler", "exec")) is not None, "k8s: exec has a HorizontalPodAutoscaler")
    check(docs.get(("PodDisruptionBudget", "gateway")) is not None, "k8s: the gateway has a PodDisruptionBudget")
    for prog, c in containers.items():
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        kind = "StatefulSet" if prog == "file" else "Deployment"
        grace = docs[(kind, prog)]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        drain = duration_s(env.get("SOCKGATE_DRAIN", "0s")) + duration_s(env.get("SOCKGATE_GRACE", "0s"))
        check(grace > drain, "k8s: %s's termination grace period (%ss) outlasts its drain and grace (%ss)"
              % (prog, grace, drain))

    sts = docs.get(("StatefulSet", "file"))
    fc = containers.get("file")
    if sts and fc:
        claims = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["name"]: m["mountPath"] for m in fc.get("volumeMounts", [])}
        root = flag_value(fc.get("args") or fc.get("command"), "--root")
        claimed = [n for n in claims if mounts.get(n) == root]
        check(len(claimed) == 1, "k8s: file's --root %s is a mounted PersistentVolumeClaim" % root)
        for n in claimed:
            check(quantity(claims[n]["spec"]["resources"]["requests"]["storage"]) > 0, "k8s: claim %s requests storage" % n)
        headless = services.get(sts["spec"].get("serviceName"))
        check(headless is not None and headless["spec"].get("clusterIP") == "None",
              "k8s: file's serviceName is a headless Service")


PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def walk_schema(obj, typ, path, kc, errors):
    """Checks obj against the Kubernetes client model typ: no unknown field, primitives of the right type."""
    if typ.startswith("list["):
        if not isinstance(obj, list):
            errors.append("%s: expected a list" % path)
            return
        for i, x in enumerate(obj):
            walk_schema(x, typ[5:-1], "%s[%d]" % (path, i), kc, errors)
    elif typ.startswith("dict("):
        if not isinstance(obj, dict):
            errors.append("%s: expected a mapping" % path)
            return
        for k, v in obj.items():
            walk_schema(v, typ[5:-1].split(", ", 1)[1], "%s.%s" % (path, k), kc, errors)
    elif typ in PRIMITIVES:
        if not isinstance(obj, PRIMITIVES[typ]) or (typ != "bool" and isinstance(obj, bool)):
            errors.append("%s: expected %s, got %r" % (path, typ, obj))
    elif typ in ("object", "datetime", "date"):
        return  # int-or-string ports, quantities, free-form
    else:
        cls = getattr(kc, typ, None)
        if cls is None or not isinstance(obj, dict):
            errors.append("%s: expected a %s" % (path, typ))
            return
        fields = {v: k for k, v in cls.attribute_map.items()}
        for k, v in obj.items():
            if k not in fields:
                errors.append("%s: unknown field '%s' in %s" % (path, k, typ))
            else:
                walk_schema(v, cls.openapi_types[fields[k]], "%s.%s" % (path, k), kc, errors)


def check_k8s_schema(src):
    """Every manifest against the API types of Debian's python3-kubernetes, when it is installed."""
    try:
        import kubernetes.client as kc
    except ImportError:
        print("schema: not checked (install Debian's python3-kubernetes for it)")
        return
    api = kc.ApiClient()
    k8s_dir = os.path.join(src, "docker", "k8s")
    uncovered = []
    for f in sorted(os.listdir(k8s_dir)):
        if not f.endswith(".yaml") or f == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(open(os.path.join(k8s_dir, f))):
            if d is None:
                continue
            version = d["apiVersion"].split("/")[-1]
            typ = version[0].upper() + version[1:] + d["kind"]
            where = "%s %s/%s" % (f, d["kind"], d["metadata"]["name"])
            if getattr(kc, typ, None) is None and typ == "V2HorizontalPodAutoscaler":
                typ = "V2beta2HorizontalPodAutoscaler"  # v2 is v2beta2 promoted with the same fields
            if getattr(kc, typ, None) is None:
                uncovered.append("%s (%s)" % (where, d["apiVersion"]))
                continue
            errors = []
            walk_schema(d, typ, where, kc, errors)
            try:
                # The client's own deserialiser enforces required fields and enum values.
                api._ApiClient__deserialize(d, typ)
            except (ValueError, TypeError) as e:
                errors.append("%s: %s" % (where, e))
            check(not errors, "; ".join(errors) or where)
    if uncovered:
        print("schema: client %s has no type for: %s" % (kc.__version__ if hasattr(kc, "__version__") else "?",
                                                        ", ".join(uncovered)))


def interpolate(value):
    """compose's ${VAR:-default} and ${VAR} with every variable unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def check_compose(src):
    compose = yaml.safe_load(open(os.path.join(src, "docker", "compose.yaml")))
    services = compose.get("services", {})
    volumes = compose.get("volumes") or {}
    for prog in PROGRAMS:
        s = services.get(prog)
        if not check(s is not None, "compose: service %s exists" % prog):
            continue
        cmd = s.get("command") or []
        check(cmd[:1] == [BINARY[prog]], "compose: %s runs %s" % (prog, BINARY[prog]))
        check(bool(s.get("image") or s.get("build")), "compose: %s has an image" % prog)
        check(bool((s.get("healthcheck") or {}).get("test")), "compose: %s has a healthcheck" % prog)
        user = str(s.get("user", "")).split(":")[0]
        check(user not in ("0", "root"), "compose: %s does not run as root" % prog)
        listen = flag_value(cmd, "--listen")
        check(listen is not None and listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"),
              "compose: %s listens on a wildcard address (%s)" % (prog, listen))
        ports = s.get("ports", [])
        if prog == "gateway":
            check(len(ports) == 1, "compose: the gateway publishes one port")
            for p in ports:
                check(interpolate(p).startswith("127.0.0.1:"), "compose: the gateway is published on 127.0.0.1 by default (%s)" % p)
        else:
            check(not ports, "compose: backend %s publishes no port" % prog)
    gw = services.get("gateway", {})
    env = gw.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    deps = gw.get("depends_on", {})
    for b in BACKENDS:
        addr = interpolate(env.get("SOCKGATE_" + b.upper(), ""))
        host = addr.rsplit(":", 1)[0] if ":" in addr else ""
        listen = flag_value((services.get(host) or {}).get("command") or [], "--listen")
        check(host == b and listen is not None and port_of(listen) == port_of(addr),
              "compose: gateway's SOCKGATE_%s=%s reaches service %s's --listen port" % (b.upper(), addr, b))
        check(isinstance(deps, dict) and (deps.get(b) or {}).get("condition") == "service_healthy",
              "compose: gateway depends on %s being healthy" % b)
    fs = services.get("file", {})
    root = flag_value(fs.get("command") or [], "--root")
    named = [v.split(":")[0] for v in fs.get("volumes", []) if isinstance(v, str) and v.split(":")[1:2] == [root]]
    check(len(named) == 1 and named[0] in volumes, "compose: file's --root %s is a named volume" % root)


def duration_s(text):
    """'15s', '2m', '500ms' in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def check_stack(src):
    """docker/stack.yaml as issue 21 lays it out (tests/docker/swarm.sh deploys it for real)."""
    stack = yaml.safe_load(open(os.path.join(src, "docker", "stack.yaml")))
    services = stack["services"]
    check(sorted(services) == sorted(PROGRAMS), "stack: services %s" % sorted(services))
    nets = stack.get("networks", {})
    check(all(n.get("driver") == "overlay" for n in nets.values()) and nets, "stack: an overlay network")
    for name, svc in services.items():
        deploy = svc.get("deploy", {})
        check(deploy.get("endpoint_mode") == "dnsrr", "stack: %s uses endpoint_mode dnsrr" % name)
        check(bool(svc.get("healthcheck", {}).get("test")), "stack: %s has a health check" % name)
        env = svc.get("environment", {})
        drain = duration_s(env.get("SOCKGATE_DRAIN", "0s")) + duration_s(env.get("SOCKGATE_GRACE", "0s"))
        check(duration_s(svc.get("stop_grace_period", "10s")) > drain,
              "stack: %s's stop_grace_period outlasts its drain and grace" % name)
        if name in ("file", "chat"):
            check(deploy.get("replicas") == 1, "stack: %s runs one task" % name)
        elif name != "gateway":
            check(deploy.get("update_config", {}).get("order") == "start-first",
                  "stack: %s updates start-first" % name)
        check(BINARY[name] == svc["command"][0], "stack: %s runs %s" % (name, BINARY[name]))
    gw = services["gateway"]
    check(gw["deploy"].get("mode") == "global", "stack: the gateway runs mode: global")
    check(all(isinstance(p, dict) and p.get("mode") == "host" for p in gw.get("ports", [])) and gw.get("ports"),
          "stack: the gateway is published in host mode")
    for b in ("echo", "exec"):
        check(services[b]["deploy"].get("replicas", 1) >= 2, "stack: %s has several replicas" % b)
    allow = flag_value(services["exec"]["command"], "--allow") or ""
    check("uname" in allow.split(","), "stack: exec's allowlist includes uname")
    check(any(isinstance(v, str) and v.startswith("files:") for v in services["file"].get("volumes", [])), "stack: file keeps a volume")
    for b, port in (("echo", 9001), ("time", 9002), ("exec", 9003), ("file", 9004), ("chat", 9005)):
        check(gw["environment"].get("SOCKGATE_" + b.upper()) == "%s:%d" % (b, port),
              "stack: the gateway finds %s by its service name" % b)
        check(flag_value(services[b]["command"], "--listen") == "0.0.0.0:%d" % port, "stack: %s listens on %d" % (b, port))


def check_dockerfile(src):
    text = open(os.path.join(src, "docker", "Dockerfile")).read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    resolved = [base.group(1) if base and f == "${BASE_IMAGE}" else f for f in froms]
    check(len(resolved) >= 2 and all(f == "debian:bookworm-slim" for f in resolved),
          "Dockerfile: multi-stage, every stage from debian:bookworm-slim (%s)" % resolved)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(bool(user) and user[-1].split(":")[0] not in ("0", "root"), "Dockerfile: the final USER is not root")
    check(re.search(r"^STOPSIGNAL\s+SIGTERM\s*$", text, re.M) is not None, "Dockerfile: STOPSIGNAL SIGTERM")
    check(re.search(r"^HEALTHCHECK\s+.*CMD", text, re.M) is not None, "Dockerfile: HEALTHCHECK")
    runtime = text[text.rfind("\nFROM "):]
    check(re.search(r"-dev\b", runtime) is None, "Dockerfile: no -dev package in the runtime stage")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    for fn in (check_k8s, check_k8s_schema, check_compose, check_stack, check_dockerfile):
        try:
            fn(src)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, yaml.YAMLError) as e:
            check(False, "%s: malformed (%s: %s)" % (fn.__name__, type(e).__name__, e))
    for f in failures:
        print("FAIL: " + f)
    print("manifests: %d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
