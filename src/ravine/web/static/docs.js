/* Renders /openapi.json as a plain list of endpoints and schemas (no CDN, no network). */
"use strict";
(async () => {
  const spec = await (await fetch("/openapi.json")).json();
  const eps = document.getElementById("eps");
  eps.replaceChildren();
  const ref = (s) => (s && s.$ref ? s.$ref.split("/").pop() : s && s.type === "array" && s.items && s.items.$ref
    ? `list[${s.items.$ref.split("/").pop()}]` : "");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const div = document.createElement("div");
      div.className = "ep";
      const body = op.requestBody && op.requestBody.content["application/json"];
      const ok = op.responses && op.responses["200"] && op.responses["200"].content
        && op.responses["200"].content["application/json"];
      const lines = [];
      if (body) lines.push(`request body: ${ref(body.schema)}`);
      if (op.parameters) lines.push("query: " + op.parameters.map((p) => p.name).join(", "));
      if (ok) lines.push(`response: ${ref(ok.schema) || "JSON"}`);
      div.innerHTML = "<span class=method></span><span class=path></span><div class=hint></div><pre></pre>";
      div.querySelector(".method").textContent = method.toUpperCase();
      div.querySelector(".path").textContent = path;
      div.querySelector(".hint").textContent = op.summary || "";
      div.querySelector("pre").textContent = lines.join("\n") || "(no body)";
      eps.append(div);
    }
  }
  const box = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) {
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.textContent = name;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(schema, null, 2);
    d.append(s, pre);
    box.append(d);
  }
})();
