// Drives a Toxiproxy server with the npm client toxiproxy-node-client and prints one JSON
// line per step; tests/test_toxiproxy_node.py checks the lines.
//
//   node check.js <toxiproxy url> <upstream host:port of an echo server>
"use strict";

const net = require("net");
const { Toxiproxy } = require("toxiproxy-node-client");

function out(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

// Round trip of one small message through `listen` (host:port), in milliseconds.
function roundTrip(listen) {
  const sep = listen.lastIndexOf(":");
  const host = listen.slice(0, sep);
  const port = Number(listen.slice(sep + 1));
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const sock = net.connect({ host, port }, () => sock.write("ping"));
    let got = "";
    sock.setTimeout(5000, () => reject(new Error("round trip timed out")));
    sock.on("data", (chunk) => {
      got += chunk.toString();
      if (got.length >= 4) {
        const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
        sock.destroy();
        resolve(elapsed);
      }
    });
    sock.on("error", reject);
  });
}

async function main() {
  const [url, upstream] = process.argv.slice(2);
  const toxiproxy = new Toxiproxy(url);

  out("version", { version: JSON.parse(await toxiproxy.getVersion()).version });

  const proxy = await toxiproxy.createProxy({
    name: "node_create",
    listen: "127.0.0.1:0",
    upstream,
  });
  out("create", { name: proxy.name, listen: proxy.listen, enabled: proxy.enabled });

  const populated = await toxiproxy.populate([
    { name: "node_pop_a", listen: "127.0.0.1:0", upstream },
    { name: "node_pop_b", listen: "127.0.0.1:0", upstream, enabled: false },
  ]);
  out("populate", {
    names: Object.keys(populated).sort(),
    enabled: Object.keys(populated).sort().map((n) => populated[n].enabled),
  });

  const all = await toxiproxy.getAll();
  out("getAll", { names: Object.keys(all).sort() });

  const fetchedProxy = await toxiproxy.get("node_create");
  out("get", { listen: fetchedProxy.listen, upstream: fetchedProxy.upstream });

  const toxic = await proxy.addToxic({
    name: "lat",
    type: "latency",
    stream: "downstream",
    toxicity: 1,
    attributes: { latency: 100, jitter: 0 },
  });
  out("addToxic", toxic.toJson());
  out("latencyApplied", { ms: await roundTrip(proxy.listen) });

  const fetched = await proxy.getToxic("lat");
  out("getToxic", fetched.toJson());

  const updated = await toxic.update({ attributes: { latency: 200 }, toxicity: 0.5 });
  out("updateToxic", updated.toJson());

  await toxic.remove();
  const remaining = await (await fetch(`${url}/proxies/node_create/toxics`)).json();
  out("removeToxic", { remaining, ms: await roundTrip(proxy.listen) });

  try {
    await proxy.addToxic({ name: "d", type: "down", stream: "downstream", toxicity: 1, attributes: {} });
    out("invalidType", { message: "accepted" });
  } catch (err) {
    out("invalidType", { message: err.message });
  }

  const disabled = await proxy.update({ enabled: false, listen: proxy.listen, upstream });
  out("disable", { enabled: disabled.enabled });

  await toxiproxy.reset();
  const afterReset = await toxiproxy.getAll();
  out("reset", {
    enabled: Object.keys(afterReset).sort().map((n) => afterReset[n].enabled),
  });

  for (const p of Object.values(afterReset)) {
    await p.remove();
  }
  out("removeAll", { names: Object.keys(await toxiproxy.getAll()) });
  out("done", {});
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
