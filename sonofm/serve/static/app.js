// sonofm web page: upload an image, show what POST /api/analyze returns.
// No framework and no external URLs; every server string is inserted with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, file: null, findingsAll: false, last: null };
  const TOP_FINDINGS = 10;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function pct(p) {
    return (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";
  }

  function showError(msg) {
    const box = $("error");
    box.textContent = msg;
    box.hidden = !msg;
  }

  function setStatus(text, ok) {
    const s = $("status");
    s.textContent = text;
    s.className = "pill " + (ok ? "ok" : "bad");
  }

  function authHeaders() {
    const t = $("token").value.trim();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  async function loadInfo() {
    try {
      const r = await fetch("/api/info");
      if (!r.ok) throw new Error("HTTP " + r.status);
      const info = await r.json();
      state.info = info;
      $("limit").textContent = "max " + info.max_upload_mb + " MB";
      $("auth-row").hidden = !info.auth_required;
      $("question-row").hidden = !info.features.report;
      $("k-row").hidden = !info.features.similar_cases;
      $("k").max = String(info.max_k);
      $("k").value = String(info.default_k);
      const feats = ["findings"];
      if (info.features.similar_cases) feats.push("similar cases (" + info.index_size + ")");
      if (info.features.report) feats.push("draft report");
      if (info.features.segmentation) feats.push("segmentation");
      setStatus("ready · " + info.backend + " · " + feats.join(", "), true);
      const saved = sessionStorage.getItem("sonofm-token");
      if (saved) $("token").value = saved;
    } catch (e) {
      setStatus("server unreachable", false);
      showError("Cannot reach the server: " + e.message);
    }
  }

  function chooseFile(file) {
    if (!file) return;
    state.file = file;
    $("file-name").textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
    $("analyze").disabled = false;
    showError("");
    const max = state.info ? state.info.max_upload_mb * 1024 * 1024 : Infinity;
    if (file.size > max) {
      showError("This file is " + (file.size / 1048576).toFixed(1) + " MB; the server accepts at most " +
        state.info.max_upload_mb + " MB.");
      $("analyze").disabled = true;
      return;
    }
    analyze();
  }

  async function analyze() {
    if (!state.file) return;
    showError("");
    const btn = $("analyze");
    btn.disabled = true;
    btn.textContent = "Analyzing…";
    const form = new FormData();
    form.append("file", state.file, state.file.name);
    const q = $("question").value.trim();
    if (q && !$("question-row").hidden) form.append("question", q);
    if (!$("k-row").hidden) form.append("k", $("k").value);
    const tok = $("token").value.trim();
    if (tok) sessionStorage.setItem("sonofm-token", tok);
    try {
      const r = await fetch("/api/analyze", { method: "POST", body: form, headers: authHeaders() });
      let body = null;
      try { body = await r.json(); } catch (_) { body = null; }
      if (!r.ok) {
        const detail = body && body.detail ? body.detail : r.statusText;
        const hint = r.status === 401 ? " Enter the access token above." : "";
        showError("The server could not analyze this file (" + r.status + "): " + detail + hint);
        return;
      }
      state.last = body;
      state.findingsAll = false;
      render(body);
    } catch (e) {
      showError("Request failed: " + e.message);
    } finally {
      btn.disabled = false;
      btn.textContent = "Analyze";
    }
  }

  function bar(label, p, extraCls) {
    const li = el("li", "bar-row" + (extraCls ? " " + extraCls : ""));
    li.appendChild(el("span", "bar-label", label));
    const track = el("span", "bar-track");
    const fill = el("span", "bar-fill");
    fill.style.width = Math.max(0.5, 100 * p).toFixed(1) + "%";
    track.appendChild(fill);
    li.appendChild(track);
    li.appendChild(el("span", "bar-value", pct(p)));
    return li;
  }

  function renderFindings(res) {
    const ol = $("findings");
    ol.replaceChildren();
    // findings are scored in one region's vocabulary: say which, and how sure the model is of it
    const scope = res.findings_region;
    $("findings-region").textContent = scope
      ? "Findings of the " + scope.label + " vocabulary (" + scope.source + " region, p = " + pct(scope.probability) + ")"
      : "";
    const list = state.findingsAll ? res.findings : res.findings.slice(0, TOP_FINDINGS);
    for (const f of list) {
      const li = bar(f.label, f.probability, f.probability >= 0.5 ? "hi" : "");
      li.title = f.dimension + "/" + f.tag;
      ol.appendChild(li);
    }
    const more = $("more-findings");
    more.hidden = res.findings.length <= TOP_FINDINGS;
    more.textContent = state.findingsAll ? "show top " + TOP_FINDINGS : "show all " + res.findings.length + " findings";
  }

  function renderSummary(res) {
    const dl = $("summary");
    dl.replaceChildren();
    const add = (k, v) => { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); };
    add("Region", res.region.label + " (" + pct(res.region.probability) + ")");
    add("Organ", res.organ.label + " (" + pct(res.organ.probability) + ")");
    const dx = res.attributes.diagnosis;
    if (dx && dx.length) add("Diagnosis", dx[0].label + " (" + pct(dx[0].probability) + ")");
  }

  function renderAttributes(res) {
    const box = $("attributes");
    box.replaceChildren();
    for (const [dim, scores] of Object.entries(res.attributes)) {
      const card = el("div", "attr");
      card.appendChild(el("h3", null, dim.replace(/_/g, " ")));
      const ol = el("ol", "bars compact");
      for (const s of scores.slice(0, 4)) ol.appendChild(bar(s.label, s.probability));
      card.appendChild(ol);
      box.appendChild(card);
    }
  }

  function renderCases(res) {
    const card = $("cases-card");
    const box = $("cases");
    box.replaceChildren();
    if (!res.similar_cases) { card.hidden = true; return; }
    card.hidden = false;
    if (!res.similar_cases.length) box.appendChild(el("p", "muted", "The index returned no cases."));
    for (const c of res.similar_cases) {
      const item = el("article", "case");
      if (c.thumbnail) {
        const img = el("img");
        img.src = c.thumbnail;
        img.alt = "case " + c.id;
        img.loading = "lazy";
        item.appendChild(img);
      }
      const body = el("div", "case-body");
      const head = el("div", "case-head");
      head.appendChild(el("strong", null, "#" + (c.rank + 1) + " · " + c.region + (c.diagnosis ? " · " + c.diagnosis : "")));
      head.appendChild(el("span", "muted small", "similarity " + c.score.toFixed(3)));
      body.appendChild(head);
      body.appendChild(el("p", "case-report", c.report || "(no report)"));
      body.appendChild(el("span", "muted small", c.id));
      item.appendChild(body);
      box.appendChild(item);
    }
  }

  function renderImage(res) {
    $("preview").src = res.preview;
    const seg = res.segmentation;
    const ov = $("overlay");
    $("overlay-controls").hidden = !seg;
    $("seg-areas").hidden = !seg;
    if (seg) {
      ov.src = seg.overlay;
      ov.hidden = !$("show-overlay").checked;
      const ul = $("seg-areas");
      ul.replaceChildren();
      for (const [name, frac] of Object.entries(seg.area_fraction)) ul.appendChild(el("li", null, name + ": " + pct(frac) + " of the image"));
    } else {
      ov.hidden = true;
      ov.removeAttribute("src");
    }
    const inp = res.input;
    let facts = inp.kind.toUpperCase() + " · " + inp.width + "×" + inp.height + " px";
    if (inp.kind === "dicom") {
      facts += " · " + inp.frames + " frame(s), frame " + (inp.frame_used + 1) + " analysed · de-identified";
      if (inp.pixel_spacing_mm) facts += " · " + Number(inp.pixel_spacing_mm).toFixed(3) + " mm/px";
    }
    $("input-facts").textContent = facts;
  }

  function renderReport(res) {
    const has = typeof res.report === "string";
    $("report-card").hidden = !has;
    // a low-confidence draft is not shown as a report: the warning and its reasons are
    const check = res.report_check || {};
    const low = has && check.low_confidence === true;
    $("report-warning").hidden = !low;
    $("report-warning").textContent = low
      ? "Low confidence: the model could not write a reliable report for this image (" +
        (check.reasons || []).join("; ") + "). The text is hidden below."
      : "";
    $("report-lowconf").hidden = !low;
    $("report-lowconf-text").textContent = low ? res.report : "";
    $("report").hidden = low;
    $("report").textContent = has && !low ? res.report : "";
    // the findings the generator was prompted with (its image classifier's answer), so a reader
    // can tell a wrong prediction from a wrong sentence
    const prompted = has && typeof check.findings === "string";
    $("report-findings").hidden = !prompted;
    $("report-findings").textContent = prompted ? "Written from the predicted " + check.findings : "";
    const ans = typeof res.answer === "string";
    $("answer-block").hidden = !ans;
    $("answer").textContent = ans ? res.answer : "";
    // where a closed answer came from (the study's measurements, the guideline rules, the
    // findings head) and what the language model itself said, so a reader can weigh it
    const ac = res.answer_check || {};
    const sourced = ans && typeof ac.answered_by === "string";
    const unsure = ans && ac.low_confidence === true;
    $("answer-source").hidden = !(sourced || unsure);
    $("answer-source").textContent =
      (sourced ? "Answered from the " + ac.answered_by +
        (typeof ac.draft === "string" ? ' (the language model said: "' + ac.draft + '")' : "") + ". " : "") +
      (unsure ? "Low confidence: " + (ac.reasons || []).join("; ") + "." : "");
  }

  function render(res) {
    $("results").hidden = false;
    renderImage(res);
    renderSummary(res);
    renderFindings(res);
    renderAttributes(res);
    renderReport(res);
    renderCases(res);
    const t = res.timing_ms;
    $("timing").textContent = "total " + t.total.toFixed(0) + " ms (model " + t.model.toFixed(0) + " ms in a batch of " +
      res.batch_size + ") · model " + (res.model.name || "") + " on " + res.model.backend + " · request " + res.request_id;
  }

  function init() {
    const drop = $("drop");
    $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
    $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); analyze(); });
    for (const ev of ["dragenter", "dragover"]) {
      drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const ev of ["dragleave", "drop"]) {
      drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
    }
    drop.addEventListener("drop", (e) => {
      const f = e.dataTransfer && e.dataTransfer.files ? e.dataTransfer.files[0] : null;
      if (f) chooseFile(f);
    });
    $("more-findings").addEventListener("click", () => {
      state.findingsAll = !state.findingsAll;
      if (state.last) renderFindings(state.last);
    });
    $("show-overlay").addEventListener("change", (e) => { $("overlay").hidden = !e.target.checked; });
    loadInfo();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
