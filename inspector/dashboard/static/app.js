// tasks dashboard: polls api/state once a second and draws it. Everything that came from a
// task or a log line is put in the page as text (textContent), never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const COLOURS = {
    done: "#4c8bd6", running: "#9cc3ef", failed: "#d9534f", requeued: "#999999", lost: "#f0ad4e",
  };
  const $ = (id) => document.getElementById(id);

  // What the page keeps between polls: its copy of the timeline's bars (the server sends only
  // the new ones), and figures a test or a benchmark can read.
  const tl = { run: null, epoch: null, since: 0, origin: null, bars: [], kept: 5000, dropped: false };
  // renderMs: the latest 200 render times (ms), for bench/dashboard.py.
  const stats = {
    polls: 0, renders: 0, errors: 0, lastRenderMs: 0, maxRenderMs: 0, version: 0, renderMs: [],
  };
  window.dashboardStats = stats;
  let last = null;
  let fetchedAt = 0;

  function put(el, value) {
    const s = value === null || value === undefined ? "\u2013" : String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  function n(v) {
    return v === null || v === undefined ? "\u2013" : Number(v).toLocaleString("en-US");
  }

  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "\u2013";
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function el(tag, cls, textValue) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (textValue !== undefined) e.textContent = textValue;
    return e;
  }

  async function poll() {
    try {
      let url = `api/state?since=${tl.since}`;
      if (tl.epoch) url += `&epoch=${encodeURIComponent(tl.epoch)}`;
      if (tl.run) url += `&run=${encodeURIComponent(tl.run)}`;
      const res = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (!res.ok) throw new Error(`the server answered ${res.status}`);
      const s = await res.json();
      fetchedAt = performance.now();
      stats.polls += 1;
      const t0 = performance.now();
      render(s);
      const ms = performance.now() - t0;
      stats.renders += 1;
      stats.lastRenderMs = ms;
      stats.maxRenderMs = Math.max(stats.maxRenderMs, ms);
      stats.renderMs.push(ms);
      if (stats.renderMs.length > 200) stats.renderMs.shift();
      stats.version = s.version;
      document.body.dataset.version = String(s.version);
      const conn = $("conn");
      conn.classList.remove("bad");
      put(conn, `live \u00b7 updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      stats.errors += 1;
      const conn = $("conn");
      conn.classList.add("bad");
      put(conn, `not connected: ${err.message}; retrying`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function render(s) {
    last = s;
    renderRun(s);
    renderQueue(s.queue);
    renderWorkers(s);
    mergeBars(s);
    drawTimeline();
    renderFailures(s.failures || []);
    renderFooter(s);
  }

  function renderRun(s) {
    const r = s.run;
    put($("run-id"), r ? r.id : s.pinned_run ? `${s.pinned_run} (no events yet)` : "none yet");
    const badge = $("emit-status");
    const status = r ? r.emit_status : "";
    put(badge, status === "unknown" ? "" : status === "running" ? "emitting" : status === "done" ? "emitted" : status);
    badge.className = `badge ${status}`;
    put($("run-done"), n(r ? r.done : 0));
    put($("run-failed"), n(r ? r.failed : 0));
    put($("run-dead"), n(r ? r.dead_lettered : 0));
    put($("run-emitted"), r ? n(r.emitted) : "\u2013");
    const p = r && r.progress !== null ? r.progress : 0;
    $("progress-bar").style.width = `${(p * 100).toFixed(2)}%`;
    put($("progress-text"), r && r.emitted !== null
      ? `${n(r.finished)} of ${n(r.emitted)} finished (${(p * 100).toFixed(1)}%)`
      : r ? `${n(r.finished)} finished; emit has not said how many` : "waiting for a run");
    put($("run-rate"), r && r.rate !== null ? `${r.rate.toFixed(r.rate < 10 ? 2 : 1)} tasks/s` : "\u2013");
    put($("run-eta"), r && r.eta_seconds !== null ? (r.eta_seconds === 0 ? "finished" : dur(r.eta_seconds)) : "\u2013");
    put($("run-source"), r ? [r.source, r.queue && `queue ${r.queue}`].filter(Boolean).join(", ") || "\u2013" : "\u2013");
    put($("run-redelivered"), n(r ? r.redelivered : 0));
    put($("run-duplicates"), n(r ? r.duplicates : 0));
  }

  function renderQueue(q) {
    if (!q) {
      put($("queue-note"), "asking the broker\u2026");
      return;
    }
    put($("queue-name"), `${q.name} \u00b7 ${q.broker}`);
    if (q.error) {
      put($("queue-note"), `broker: ${q.error}`);
      return;
    }
    put($("queue-ready"), n(q.ready));
    put($("queue-unacked"), n(q.unacked));
    put($("queue-consumers"), n(q.consumers));
    put($("queue-dead"), n(q.dead === null ? 0 : q.dead));
    const r = q.rates;
    put($("queue-rates"), r
      ? `per second: publish ${r.publish.toFixed(1)} \u00b7 deliver ${r.deliver.toFixed(1)} \u00b7 ack ${r.ack.toFixed(1)}`
      : "rates: the management API did not answer");
    let note = "";
    if (!q.exists) note = "the queue does not exist (yet): emit or work create it";
    else if (!q.management.answered) note = q.management.note;
    put($("queue-note"), note);
  }

  function renderWorkers(s) {
    put($("workers-online"), s.workers_online);
    const body = $("workers").tBodies[0];
    const rows = new Map();
    for (const tr of body.rows) rows.set(tr.dataset.worker, tr);
    const now = performance.now();
    const extra = (now - fetchedAt) / 1000;
    let i = 0;
    let noHost = 0;
    for (const w of s.workers) {
      let tr = rows.get(w.name);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.worker = w.name;
        for (const cls of ["name", "status", "task", "for", "done n", "failed n", "host", "seen"]) {
          tr.appendChild(el("td", cls));
        }
      }
      rows.delete(w.name);
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
      i += 1;
      const c = tr.cells;
      tr.className = w.status;
      put(c[0], w.name);
      put(c[1], w.status);
      c[1].className = `status ${w.status}`;
      c[1].title = w.note || "";
      const task = c[2];
      if (w.task) {
        task.className = "task";
        setTask(task, w.task.row, w.task.body);
        put(c[3], dur(w.task.seconds + extra));
      } else {
        task.className = "task idle-task";
        if (w.last_task) setTask(task, w.last_task.row, `last: ${w.last_task.body}`);
        else setTask(task, null, w.note || "");
        put(c[3], "");
      }
      put(c[4], n(w.done));
      put(c[5], n(w.failed));
      put(c[6], w.host || "\u2013");
      if (!w.host) noHost += 1;
      put(c[7], `${dur(w.seconds_since_seen)} ago`);
    }
    for (const tr of rows.values()) tr.remove();
    const notes = [];
    if (noHost) {
      const where = s.source && s.source.where ? ` (these lines come from ${s.source.where})` : "";
      notes.push(`machine: the workers' events carry no host field yet${where}`);
    }
    if (s.workers_hidden) notes.push(`${s.workers_hidden} worker(s) gone before this run not shown`);
    put($("workers-note"), notes.join(" \u00b7 "));
  }

  function setTask(td, row, bodyText) {
    // Two spans, built once, filled with text: a body such as <img onerror=...> stays text.
    if (td.childNodes.length !== 2) {
      td.textContent = "";
      td.appendChild(el("span", "row"));
      td.appendChild(el("span", "body"));
    }
    put(td.childNodes[0], row === null || row === undefined ? "" : `#${row}`);
    put(td.childNodes[1], bodyText);
    td.title = bodyText;
  }

  // -- the timeline ---------------------------------------------------------------------------
  function mergeBars(s) {
    const t = s.timeline;
    if (!t || !t.run) {
      tl.bars = [];
      tl.run = null;
      tl.origin = null;
      return;
    }
    if (t.full || t.run !== tl.run || s.epoch !== tl.epoch) tl.bars = [];
    tl.run = t.run;
    tl.epoch = s.epoch;
    tl.origin = Date.parse(t.origin);
    tl.kept = t.kept;
    tl.dropped = t.dropped;
    for (const b of t.bars) tl.bars.push(b);
    if (tl.bars.length > tl.kept) tl.bars.splice(0, tl.bars.length - tl.kept);
    tl.since = s.version;
    put($("timeline-note"), t.dropped
      ? `the latest ${n(tl.kept)} tasks; 'tasks report --timeline' draws the whole run`
      : "");
  }

  const LANE = 20;
  const AXIS = 18;
  const NAME_W = 120;
  let layout = null;

  function drawTimeline() {
    const canvas = $("timeline");
    const s = last;
    const lanes = new Map();
    for (const w of s.workers) lanes.set(w.name, lanes.size);
    for (const b of tl.bars) if (!lanes.has(b[1])) lanes.set(b[1], lanes.size);
    const running = [];
    const nowMs = tl.origin === null ? 0 : Date.parse(s.now) - tl.origin + (performance.now() - fetchedAt);
    for (const w of s.workers) {
      if (w.task && w.task.run === tl.run && tl.origin !== null) {
        running.push([w.name, w.task.row, Date.parse(w.task.started_at) - tl.origin]);
      }
    }
    // From the run's start (the emit) unless older bars were dropped; to now while any runs.
    let t0 = 0;
    let t1 = 1000;
    for (const b of tl.bars) {
      if (b[4] > t1) t1 = b[4];
    }
    if (tl.dropped && tl.bars.length) t0 = tl.bars[0][3];
    if (running.length) t1 = Math.max(t1, nowMs);
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 800;
    const cssH = AXIS + Math.max(1, lanes.size) * LANE + 4;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
      canvas.style.height = `${cssH}px`;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const plotW = Math.max(10, cssW - NAME_W - 8);
    const span = Math.max(1, t1 - t0);
    const x = (ms) => NAME_W + ((Math.max(ms, t0) - t0) / span) * plotW;
    layout = { t0, span, plotW, lanes, perLane: new Map() };
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (const [name, i] of lanes) {
      const y = AXIS + i * LANE;
      ctx.fillStyle = i % 2 ? "#f7f8fa" : "#ffffff";
      ctx.fillRect(NAME_W, y, plotW, LANE);
      ctx.fillStyle = "#1f2328";
      ctx.fillText(name.length > 18 ? `${name.slice(0, 17)}\u2026` : name, 4, y + LANE / 2);
      layout.perLane.set(i, []);
    }
    if (!tl.bars.length && !running.length) {
      ctx.fillStyle = "#67707a";
      ctx.fillText(tl.run ? "no task has started yet" : "waiting for a run", NAME_W, AXIS / 2);
      return;
    }
    // The axis under the bars: a few round ticks, in seconds from the run's start.
    ctx.fillStyle = "#67707a";
    ctx.strokeStyle = "#e3e6ea";
    ctx.lineWidth = 1;
    const step = niceStep(span / 1000 / 8);
    for (let sec = Math.ceil(t0 / 1000 / step) * step; sec * 1000 <= t1; sec += step) {
      const px = Math.round(x(sec * 1000)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(px, AXIS - 4);
      ctx.lineTo(px, cssH);
      ctx.stroke();
      ctx.fillText(`${+sec.toFixed(2)} s`, px + 3, AXIS / 2);
    }
    const bar = (b, colour) => {
      const i = lanes.get(b[1]);
      const x0 = x(b[3]);
      const w = Math.max(1, x(b[4]) - x0 - 1); // a pixel's gap: back-to-back tasks stay apart
      const y = AXIS + i * LANE + 3;
      ctx.fillStyle = colour;
      ctx.fillRect(x0, y, w, LANE - 6);
      if (w > 22 && b[2] !== null) {
        ctx.fillStyle = b[5] === "running" ? "#1f2a37" : "#ffffff";
        ctx.fillText(String(b[2]), x0 + 3, y + (LANE - 6) / 2, w - 4);
      }
      layout.perLane.get(i).push(b);
    };
    for (const b of tl.bars) bar(b, COLOURS[b[5]] || COLOURS.lost);
    for (const [name, row, start] of running) bar([0, name, row, start, nowMs, "running"], COLOURS.running);
  }

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 0.001))));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
    return 10 * p;
  }

  function onHover(ev) {
    const tip = $("tooltip");
    if (!layout) return;
    const rect = ev.target.getBoundingClientRect();
    const px = ev.clientX - rect.left;
    const lane = Math.floor((ev.clientY - rect.top - AXIS) / LANE);
    const ms = layout.t0 + ((px - NAME_W) / layout.plotW) * layout.span;
    const bars = layout.perLane.get(lane) || [];
    const hit = bars.find((b) => b[3] <= ms && ms <= b[4]);
    if (!hit) {
      tip.hidden = true;
      return;
    }
    const row = hit[2] === null ? "?" : hit[2];
    put(tip, `row ${row} \u00b7 ${hit[1]} \u00b7 ${hit[5]} \u00b7 ${dur((hit[4] - hit[3]) / 1000)}`);
    tip.style.left = `${px + 12}px`;
    tip.style.top = `${ev.clientY - rect.top + 12}px`;
    tip.hidden = false;
  }

  // -- failures and the footer ----------------------------------------------------------------
  let failuresKey = "";

  function renderFailures(list) {
    put($("failures-count"), list.length ? `(latest ${list.length})` : "");
    $("failures-empty").hidden = list.length > 0;
    const key = list.map((f) => `${f.task}/${f.attempt}/${f.at}/${f.dead_lettered}`).join("|");
    if (key === failuresKey) return;
    failuresKey = key;
    const ol = $("failures");
    const items = list.map((f) => {
      const li = el("li");
      li.appendChild(el("span", "when", (f.at || "").slice(11, 19)));
      li.appendChild(document.createTextNode(`row ${f.row === null ? "?" : f.row} on ${f.worker}`));
      if (f.attempt) li.appendChild(document.createTextNode(` (attempt ${f.attempt}${f.of ? ` of ${f.of}` : ""})`));
      li.appendChild(document.createTextNode(": "));
      li.appendChild(el("span", "reason", f.reason || "no reason given"));
      if (f.body !== null && f.body !== undefined) {
        li.appendChild(document.createTextNode(" \u2014 body "));
        li.appendChild(el("span", "body", f.body));
      }
      if (f.dead_lettered) li.appendChild(el("span", "dead", "dead-lettered"));
      return li;
    });
    ol.replaceChildren(...items);
  }

  function renderFooter(s) {
    const src = s.source || {};
    const parts = [
      `events from ${src.where || src.kind || "?"}`,
      `${n(src.events)} events folded`,
    ];
    if (src.unreadable_lines) parts.push(`${n(src.unreadable_lines)} unreadable line(s) skipped`);
    if (src.note) parts.push(src.note);
    put($("footer"), parts.join(" \u00b7 "));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("timeline").addEventListener("mousemove", onHover);
    $("timeline").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    window.addEventListener("resize", () => { if (last) drawTimeline(); });
    poll();
  });
})();
