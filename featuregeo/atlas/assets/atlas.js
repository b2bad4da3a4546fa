/* featuregeo feature atlas: WebGL scatter (Canvas2D fallback), grid-index picking, search, panel.
 * Data arrive as window.ATLAS_META (inline) and data/layer_L.js files that call ATLAS_ADD_LAYER.
 * Every string from the data is rendered with textContent (never innerHTML). */
(function () {
  "use strict";
  var META = window.ATLAS_META || { layers: [] };
  var $ = function (id) { return document.getElementById(id); };
  var glCanvas = $("gl"), overlay = $("overlay"), tip = $("tip");
  var octx = overlay.getContext("2d");
  var params = new URLSearchParams(window.location.search);
  var cache = {}, pending = {};
  var S = { d: null, colourBy: null, selected: -1, hover: -1, cx: 0, cy: 0, scale: 1, colours: null };
  var atlas = window.atlas = {
    ready: false, renderedCount: 0, renderer: null, layer: null, selectedId: null, loadMs: null,
    errors: [], setLayer: setLayer, selectId: selectId, screenPosition: screenPosition,
    timings: { scriptStart: performance.now() }
  };

  // ---------------------------------------------------------------- data
  function decode(b64, type) {
    if (b64 === undefined || b64 === null) return null;
    var bin = atob(b64), n = bin.length, u8 = new Uint8Array(n);
    for (var i = 0; i < n; i++) u8[i] = bin.charCodeAt(i);
    var T = { f4: Float32Array, i4: Int32Array, i2: Int16Array, u2: Uint16Array, u1: Uint8Array }[type];
    return new T(u8.buffer);
  }
  window.ATLAS_ADD_LAYER = function (raw) {
    var d = {
      layer: raw.layer, n: raw.n, ids: decode(raw.ids, "i4"), xy: decode(raw.xy, "f4"),
      norm: decode(raw.norm, "f4"), freq: decode(raw.freq, "f4"), nFired: decode(raw.n_fired, "i4"),
      nBlocks: raw.n_blocks, top: raw.top || 0, cofire: decode(raw.cofire, "i4"), cofireN: decode(raw.cofire_n11, "i4"),
      lobes: {}, labels: new Map(), autoLabels: new Map(), crystals: raw.crystals || [], npid: raw.neuronpedia_id, galaxy: raw.galaxy,
      row: new Map(), byFeature: new Map()
    };
    Object.keys(raw.lobes || {}).forEach(function (k) { d.lobes[k] = decode(raw.lobes[k], raw.lobe_dtype[k]); });
    (raw.labels || []).forEach(function (p) { d.labels.set(p[0], String(p[1])); });
    (raw.auto_labels || []).forEach(function (p) { d.autoLabels.set(p[0], String(p[1])); });
    for (var i = 0; i < d.n; i++) d.row.set(d.ids[i], i);
    d.crystals.forEach(function (c, ci) {
      for (var j = 1; j <= 4; j++) {
        var list = d.byFeature.get(c[j]) || [];
        if (list.indexOf(ci) < 0) list.push(ci);
        d.byFeature.set(c[j], list);
      }
    });
    buildGrid(d);
    atlas.timings["decoded_" + d.layer] = performance.now();
    cache[d.layer] = d;
    var cb = pending[d.layer];
    delete pending[d.layer];
    if (cb) cb(d);
  };
  function loadLayer(layer, cb) {
    if (cache[layer]) { if (cb) cb(cache[layer]); return; }
    var info = META.layers.filter(function (l) { return l.layer === layer; })[0];
    if (!info) { atlas.errors.push("no layer " + layer); return; }
    var inFlight = Object.prototype.hasOwnProperty.call(pending, layer);
    pending[layer] = cb;
    if (inFlight) return;  // already requested: the new callback replaces the old one
    atlas.timings["request_" + layer] = performance.now();
    var s = document.createElement("script");
    s.src = info.data;
    s.onerror = function () { delete pending[layer]; atlas.errors.push("cannot load " + info.data); setStatus("cannot load " + info.data); };
    document.body.appendChild(s);
  }

  // ---------------------------------------------------------------- dashboards: data/dash_L.js + data/dashboards.js, on demand
  var dash = {}, dashWait = {}, dashAsked = {}, TOK = null, tokAsked = false;
  function addScript(src) {
    var s = document.createElement("script"); s.src = src;
    s.onerror = function () { atlas.errors.push("cannot load " + src); setStatus("cannot load " + src); };
    document.body.appendChild(s);
  }
  function dashDone() {
    if (!TOK) return;
    Object.keys(dashWait).forEach(function (k) {
      if (!dash[k]) return;
      var cbs = dashWait[k]; delete dashWait[k];
      cbs.forEach(function (cb) { cb(dash[k]); });
    });
  }
  window.ATLAS_ADD_DASHBOARDS = function (raw) {
    dash[raw.layer] = {
      layer: raw.layer, C: raw.contexts, W: raw.window, before: raw.before, nTokens: raw.n_tokens, edges: raw.edges,
      bins: raw.bins, m: raw.logits, block: decode(raw.ctx_block, "i4"), pos: decode(raw.ctx_pos, "u2"),
      max: decode(raw.ctx_max, "f4"), acts4: decode(raw.ctx_acts4, "u1"), hist: decode(raw.hist, "u1"),
      density: decode(raw.density, "f4"), lgPos: decode(raw.lg_pos, "i4"), lgPosV: decode(raw.lg_pos_v, "f4"),
      lgNeg: decode(raw.lg_neg, "i4"), lgNegV: decode(raw.lg_neg_v, "f4"), text: null
    };
    atlas.timings["dashboards_" + raw.layer] = performance.now();
    dashDone();
  };
  window.ATLAS_ADD_TOKENS = function (raw) {
    var blocks = decode(raw.blocks, "i4"), ids = decode(raw.vocab_ids, "i4"), i;
    TOK = { T: raw.block_len, tokens: decode(raw.tokens, "i4"), row: new Map(), str: new Map() };
    for (i = 0; i < blocks.length; i++) TOK.row.set(blocks[i], i);
    for (i = 0; i < ids.length; i++) TOK.str.set(ids[i], String(raw.vocab[i]));
    dashDone();
  };
  function layerInfo(layer) { return META.layers.filter(function (l) { return l.layer === layer; })[0]; }
  function withDashboards(layer, cb) {  // false when the layer has none; cb(D) once loaded
    var info = layerInfo(layer);
    if (!info || !info.dashboards || !META.tokens) return false;
    if (dash[layer] && TOK) { cb(dash[layer]); return true; }
    (dashWait[layer] = dashWait[layer] || []).push(cb);
    if (!dashAsked[layer]) { dashAsked[layer] = true; addScript(info.dashboards); }
    if (!tokAsked) { tokAsked = true; addScript(META.tokens); }
    return true;
  }
  atlas.withDashboards = withDashboards;
  function tokText(id) { var t = TOK.str.get(id); return t === undefined ? "<" + id + ">" : t; }
  function shown(t) { return t.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5"); }
  function contextsOf(D, r) {  // [{max, tokens: [[text, activation / max (4-bit), isTop]]}]
    var out = [];
    for (var c = 0; c < D.C; c++) {
      var k = r * D.C + c, blk = D.block[k]; if (blk < 0) break;
      var row = TOK.row.get(blk); if (row === undefined) continue;
      var toks = [];
      for (var j = 0; j < D.W; j++) {
        var t = D.pos[k] - D.before + j; if (t < 0 || t >= TOK.T) continue;
        var id = TOK.tokens[row * TOK.T + t]; if (id < 0) continue;
        var q = k * D.W + j, b = D.acts4[q >> 1], lvl = (q & 1) ? b >> 4 : b & 15;
        toks.push([tokText(id), lvl / 15, j === D.before]);
      }
      out.push({ max: D.max[k], tokens: toks });
    }
    return out;
  }
  function contextText(D, r) {
    if (!D.text) D.text = [];
    if (D.text[r] === undefined) D.text[r] = contextsOf(D, r).map(function (c) {
      return c.tokens.map(function (t) { return t[0]; }).join(""); }).join("\n").toLowerCase();
    return D.text[r];
  }
  function showDashboards(panel, i) {
    var d = S.d, layer = d.layer;
    var sec = el("section"); sec.id = "dashboard"; panel.appendChild(sec);
    var ok = withDashboards(layer, function (D) {
      if (S.d !== d || S.selected !== i) return;
      sec.textContent = ""; renderDashboard(sec, D, i);
    });
    if (!ok) { sec.remove(); return; }
    if (!sec.childNodes.length) sec.appendChild(el("p", "loading dashboards…", "hint"));
  }
  function renderDashboard(sec, D, r) {
    sec.appendChild(el("h3", "Top activations"));
    var ctxs = contextsOf(D, r), box = el("div"); box.id = "contexts";
    if (!ctxs.length) box.appendChild(el("p", "never active in the harvest", "hint"));
    ctxs.forEach(function (c) {
      var line = el("div", undefined, "ctx");
      line.appendChild(el("span", fmt(c.max, 3), "ctxmax"));
      c.tokens.forEach(function (t) {
        var sp = el("span", shown(t[0]), t[2] ? "tok top" : "tok");
        if (t[1] > 0) { sp.style.backgroundColor = "rgba(230,110,20," + (0.1 + 0.8 * t[1]).toFixed(3) + ")"; sp.className += " on"; }
        sp.title = "≈ " + fmt(c.max * t[1], 2);
        line.appendChild(sp);
      });
      box.appendChild(line);
    });
    sec.appendChild(box);
    // histogram over the fixed log-spaced bins, cropped to the bins in use
    var h0 = r * D.bins, lo = -1, hi = -1, b;
    for (b = 0; b < D.bins; b++) if (D.hist[h0 + b] > 0) { if (lo < 0) lo = b; hi = b; }
    sec.appendChild(el("h3", "Activation histogram"));
    var hist = el("div"); hist.id = "hist";
    if (lo < 0) hist.appendChild(el("p", "no positive activations", "hint"));
    else {
      var bars = el("div", undefined, "bars");
      for (b = lo; b <= hi; b++) {
        var bar = el("div", undefined, "bar"); bar.style.height = Math.max(1, Math.round(60 * D.hist[h0 + b] / 255)) + "px";
        bar.title = fmt(D.edges[b], 3) + " – " + fmt(D.edges[b + 1], 3); bars.appendChild(bar);
      }
      hist.appendChild(bars);
      hist.appendChild(el("div", "activation " + fmt(D.edges[lo], 2) + " … " + fmt(D.edges[hi + 1], 2) +
        " (log bins); active on " + fmt(100 * D.density[r], 3) + "% of " + D.nTokens + " tokens", "axis"));
    }
    sec.appendChild(hist);
    if (D.m) {
      sec.appendChild(el("h3", "Logit effects"));
      var tb = el("table"); tb.id = "logits";
      var hd = el("tr"); ["promoted", "", "suppressed", ""].forEach(function (x) { hd.appendChild(el("th", x)); }); tb.appendChild(hd);
      for (var j = 0; j < D.m; j++) {
        var tr = el("tr"), q = r * D.m + j;
        tr.appendChild(el("td", shown(tokText(D.lgPos[q])), "tok")); tr.appendChild(el("td", "+" + fmt(D.lgPosV[q], 3), "num"));
        tr.appendChild(el("td", shown(tokText(D.lgNeg[q])), "tok")); tr.appendChild(el("td", fmt(D.lgNegV[q], 3), "num"));
        tb.appendChild(tr);
      }
      sec.appendChild(tb);
    }
  }

  // ---------------------------------------------------------------- picking: uniform grid in data space
  function buildGrid(d) {
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity, i;
    for (i = 0; i < d.n; i++) {
      var x = d.xy[2 * i], y = d.xy[2 * i + 1];
      if (x < xmin) xmin = x; if (x > xmax) xmax = x; if (y < ymin) ymin = y; if (y > ymax) ymax = y;
    }
    if (!(xmax > xmin)) { xmax = xmin + 1; } if (!(ymax > ymin)) { ymax = ymin + 1; }
    var g = Math.max(1, Math.ceil(Math.sqrt(d.n / 4)));
    var cell = new Int32Array(d.n), start = new Int32Array(g * g + 1), items = new Int32Array(d.n);
    for (i = 0; i < d.n; i++) {
      var cx = Math.min(g - 1, Math.floor((d.xy[2 * i] - xmin) / (xmax - xmin) * g));
      var cy = Math.min(g - 1, Math.floor((d.xy[2 * i + 1] - ymin) / (ymax - ymin) * g));
      cell[i] = cy * g + cx; start[cell[i] + 1]++;
    }
    for (i = 0; i < g * g; i++) start[i + 1] += start[i];
    var fill = start.slice(0, g * g);
    for (i = 0; i < d.n; i++) items[fill[cell[i]]++] = i;
    d.grid = { g: g, start: start, items: items, xmin: xmin, xmax: xmax, ymin: ymin, ymax: ymax };
  }
  function pick(px, py, radiusPx) {
    var d = S.d; if (!d) return -1;
    var G = d.grid, w = toWorld(px, py), r = radiusPx / S.scale;
    var fx = function (x) { return Math.floor((x - G.xmin) / (G.xmax - G.xmin) * G.g); };
    var fy = function (y) { return Math.floor((y - G.ymin) / (G.ymax - G.ymin) * G.g); };
    var x0 = Math.max(0, fx(w[0] - r)), x1 = Math.min(G.g - 1, fx(w[0] + r));
    var y0 = Math.max(0, fy(w[1] - r)), y1 = Math.min(G.g - 1, fy(w[1] + r));
    var best = -1, bd = r * r;
    for (var cy = y0; cy <= y1; cy++) for (var cx = x0; cx <= x1; cx++) {
      var c = cy * G.g + cx;
      for (var k = G.start[c]; k < G.start[c + 1]; k++) {
        var i = G.items[k], dx = d.xy[2 * i] - w[0], dy = d.xy[2 * i + 1] - w[1], dd = dx * dx + dy * dy;
        if (dd <= bd) { bd = dd; best = i; }
      }
    }
    return best;
  }

  // ---------------------------------------------------------------- view transform (CSS pixels)
  function size() { return [overlay.clientWidth || 1, overlay.clientHeight || 1]; }
  function toScreen(x, y) { var s = size(); return [(x - S.cx) * S.scale + s[0] / 2, s[1] / 2 - (y - S.cy) * S.scale]; }
  function toWorld(px, py) { var s = size(); return [(px - s[0] / 2) / S.scale + S.cx, (s[1] / 2 - py) / S.scale + S.cy]; }
  function fit() {
    var G = S.d.grid, s = size();
    S.cx = (G.xmin + G.xmax) / 2; S.cy = (G.ymin + G.ymax) / 2;
    S.scale = 0.92 * Math.min(s[0] / (G.xmax - G.xmin), s[1] / (G.ymax - G.ymin));
  }
  function screenPosition(id) {
    var i = S.d ? S.d.row.get(id) : undefined;
    if (i === undefined) return null;
    var p = toScreen(S.d.xy[2 * i], S.d.xy[2 * i + 1]), r = overlay.getBoundingClientRect();
    return { x: r.left + p[0], y: r.top + p[1] };
  }

  // ---------------------------------------------------------------- colours
  function hsl(h, s, l) {
    var a = s * Math.min(l, 1 - l), f = function (n) {
      var k = (n + h / 30) % 12; return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    };
    return [f(0), f(8), f(4)];
  }
  function category(k) { return k < 0 ? [0.72, 0.74, 0.77] : hsl((k * 137.508) % 360, 0.65, k % 2 ? 0.42 : 0.55); }
  function ramp(t) { // dark blue -> teal -> yellow
    t = Math.max(0, Math.min(1, t));
    var a = [0.17, 0.11, 0.42], b = [0.13, 0.57, 0.55], c = [0.99, 0.87, 0.15];
    var u = t < 0.5 ? t * 2 : (t - 0.5) * 2, p = t < 0.5 ? a : b, q = t < 0.5 ? b : c;
    return [p[0] + (q[0] - p[0]) * u, p[1] + (q[1] - p[1]) * u, p[2] + (q[2] - p[2]) * u];
  }
  function colourOptions(d) {
    var opts = Object.keys(d.lobes).map(Number).sort(function (a, b) { return a - b; })
      .map(function (k) { return ["lobe_" + k, (META.params.affinity || "") + " lobes, k=" + k]; });
    if (d.freq) opts.push(["freq", "firing frequency (log)"]);
    opts.push(["norm", "decoder norm"]);
    return opts;
  }
  function defaultColour(d) {
    var ks = Object.keys(d.lobes).map(Number).sort(function (a, b) { return a - b; });
    if (META.params.n_clusters && ks.indexOf(META.params.n_clusters) >= 0) return "lobe_" + META.params.n_clusters;
    var k = ks.filter(function (x) { return x >= 8; })[0] || ks[ks.length - 1];
    return k ? "lobe_" + k : (d.freq ? "freq" : "norm");
  }
  function computeColours() {
    var d = S.d, out = new Uint8Array(3 * d.n), by = S.colourBy, i, c;
    var legend = $("legend"); legend.textContent = "";
    if (by.indexOf("lobe_") === 0) {
      var lab = d.lobes[by.slice(5)], counts = new Map();
      for (i = 0; i < d.n; i++) { c = category(lab[i]); out.set([c[0] * 255, c[1] * 255, c[2] * 255], 3 * i); counts.set(lab[i], (counts.get(lab[i]) || 0) + 1); }
      Array.from(counts.keys()).sort(function (a, b) { return a - b; }).slice(0, 40).forEach(function (k) {
        var div = document.createElement("div"), sw = document.createElement("span"), col = category(k);
        sw.className = "sw"; sw.style.background = "rgb(" + col.map(function (v) { return Math.round(v * 255); }).join(",") + ")";
        div.appendChild(sw); div.appendChild(document.createTextNode((k < 0 ? "none" : "lobe " + k) + " (" + counts.get(k) + ")"));
        legend.appendChild(div);
      });
    } else {
      var v = new Float64Array(d.n), lo = Infinity, hi = -Infinity;
      for (i = 0; i < d.n; i++) {
        v[i] = by === "freq" ? Math.log10(d.freq[i] + 1e-6) : d.norm[i];
        if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i];
      }
      for (i = 0; i < d.n; i++) { c = ramp(hi - lo > 1e-6 * Math.max(1, Math.abs(hi)) ? (v[i] - lo) / (hi - lo) : 0.5); out.set([c[0] * 255, c[1] * 255, c[2] * 255], 3 * i); }
      if (by === "freq") {  // colours are log-scaled; the legend speaks in frequencies (fraction of blocks)
        var fmin = Infinity, fmax = -Infinity, never = 0;
        for (i = 0; i < d.n; i++) { var f = d.freq[i]; if (f <= 0) never++; if (f < fmin) fmin = f; if (f > fmax) fmax = f; }
        var fmt = function (x) { return x <= 0 ? "0" : (x >= 0.01 ? (100 * x).toPrecision(3) + "%" : x.toExponential(1)); };
        legend.textContent = "firing frequency (share of blocks, log colour scale): " + fmt(fmin) + " … " + fmt(fmax) +
          (never ? "; " + never + " never fired" : "");
      } else {
        legend.textContent = "decoder norm: " + lo.toPrecision(3) + " … " + hi.toPrecision(3);
      }
    }
    S.colours = out;
  }

  // ---------------------------------------------------------------- renderers
  function makeWebGL() {
    if (params.get("renderer") === "canvas") return null;
    var gl = glCanvas.getContext("webgl", { antialias: false, preserveDrawingBuffer: true });
    if (!gl) return null;
    var vs = "attribute vec2 p; attribute vec3 c; uniform vec2 ctr; uniform float sc; uniform vec2 sz; uniform float ps;" +
      "varying vec3 vc; void main(){ vec2 q=(p-ctr)*sc; gl_Position=vec4(2.0*q.x/sz.x, 2.0*q.y/sz.y, 0.0, 1.0);" +
      " gl_PointSize=ps; vc=c; }";
    var fs = "precision mediump float; varying vec3 vc; void main(){ vec2 d=gl_PointCoord-0.5;" +
      " if(dot(d,d)>0.25) discard; gl_FragColor=vec4(vc,1.0); }";
    function sh(type, src) {
      var s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    }
    var prog = gl.createProgram();
    gl.attachShader(prog, sh(gl.VERTEX_SHADER, vs)); gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
    var loc = { p: gl.getAttribLocation(prog, "p"), c: gl.getAttribLocation(prog, "c") };
    ["ctr", "sc", "sz", "ps"].forEach(function (u) { loc[u] = gl.getUniformLocation(prog, u); });
    var pbuf = gl.createBuffer(), cbuf = gl.createBuffer(), n = 0;
    return {
      name: "webgl",
      setData: function (d) {
        gl.bindBuffer(gl.ARRAY_BUFFER, pbuf); gl.bufferData(gl.ARRAY_BUFFER, d.xy, gl.STATIC_DRAW); n = d.n;
      },
      setColours: function (c) { gl.bindBuffer(gl.ARRAY_BUFFER, cbuf); gl.bufferData(gl.ARRAY_BUFFER, c, gl.STATIC_DRAW); },
      draw: function () {
        var s = size(), dpr = window.devicePixelRatio || 1;
        gl.viewport(0, 0, glCanvas.width, glCanvas.height);
        gl.clearColor(1, 1, 1, 1); gl.clear(gl.COLOR_BUFFER_BIT);
        gl.useProgram(prog);
        gl.bindBuffer(gl.ARRAY_BUFFER, pbuf); gl.enableVertexAttribArray(loc.p); gl.vertexAttribPointer(loc.p, 2, gl.FLOAT, false, 0, 0);
        gl.bindBuffer(gl.ARRAY_BUFFER, cbuf); gl.enableVertexAttribArray(loc.c); gl.vertexAttribPointer(loc.c, 3, gl.UNSIGNED_BYTE, true, 0, 0);
        gl.uniform2f(loc.ctr, S.cx, S.cy); gl.uniform1f(loc.sc, S.scale); gl.uniform2f(loc.sz, s[0], s[1]);
        gl.uniform1f(loc.ps, Math.max(2, Math.min(8, 3 * Math.sqrt(20000 / Math.max(1, n)))) * dpr);
        gl.drawArrays(gl.POINTS, 0, n);
        return gl.getError() === gl.NO_ERROR ? n : 0;
      }
    };
  }
  function makeCanvas2D() {
    var ctx = glCanvas.getContext("2d"), data = null, cols = null;
    return {
      name: "canvas2d",
      setData: function (d) { data = d; },
      setColours: function (c) { cols = c; },
      draw: function () {
        var dpr = window.devicePixelRatio || 1, s = size(), drawn = 0;
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, s[0], s[1]);
        for (var i = 0; i < data.n; i++) {
          var p = toScreen(data.xy[2 * i], data.xy[2 * i + 1]);
          ctx.fillStyle = "rgb(" + cols[3 * i] + "," + cols[3 * i + 1] + "," + cols[3 * i + 2] + ")";
          ctx.fillRect(p[0] - 1.5, p[1] - 1.5, 3, 3); drawn++;
        }
        return drawn;
      }
    };
  }
  // request the first layer before creating the WebGL context, so reading the file overlaps it
  var firstLayer = Number(params.get("layer"));
  if (!META.layers.some(function (l) { return l.layer === firstLayer; }) || params.get("layer") === null) {
    firstLayer = META.layers.length ? META.layers[0].layer : null;
  }
  if (firstLayer !== null) loadLayer(firstLayer, null);
  var R = null;
  try { R = makeWebGL(); } catch (e) { atlas.errors.push(String(e)); R = null; }
  if (!R) R = makeCanvas2D();
  atlas.renderer = R.name;

  function resize() {
    var dpr = window.devicePixelRatio || 1, s = size();
    [glCanvas, overlay].forEach(function (c) { c.width = Math.round(s[0] * dpr); c.height = Math.round(s[1] * dpr); });
  }
  var frame = 0;
  function redraw() { if (!frame) frame = requestAnimationFrame(function () { frame = 0; drawNow(); }); }
  function drawNow() {
    if (!S.d) return;
    var n = R.draw();
    atlas.renderedCount = n; glCanvas.setAttribute("data-rendered-count", String(n));
    drawOverlay();
    if (!atlas.ready && n > 0) { atlas.ready = true; atlas.loadMs = performance.now(); document.body.setAttribute("data-ready", "1"); }
  }
  function drawOverlay() {
    var dpr = window.devicePixelRatio || 1, s = size(), d = S.d;
    octx.setTransform(dpr, 0, 0, dpr, 0, 0); octx.clearRect(0, 0, s[0], s[1]);
    var selId = S.selected >= 0 ? d.ids[S.selected] : null;
    var sel = selId === null ? [] : (d.byFeature.get(selId) || []);
    if ($("crystals").checked) d.crystals.forEach(function (c, ci) { if (sel.indexOf(ci) < 0) drawCrystal(c, "rgba(90,90,90,0.55)", 1); });
    sel.forEach(function (ci) { drawCrystal(d.crystals[ci], "rgba(217,84,30,0.95)", 2); });
    [[S.hover, "#444", 5], [S.selected, "#d9541e", 7]].forEach(function (h) {
      if (h[0] < 0) return;
      var p = toScreen(d.xy[2 * h[0]], d.xy[2 * h[0] + 1]);
      octx.strokeStyle = h[1]; octx.lineWidth = 2; octx.beginPath(); octx.arc(p[0], p[1], h[2], 0, 2 * Math.PI); octx.stroke();
    });
  }
  function drawCrystal(c, colour, width) {
    var d = S.d, pts = [c[1], c[2], c[3], c[4]].map(function (id) {
      var i = d.row.get(id); return i === undefined ? null : toScreen(d.xy[2 * i], d.xy[2 * i + 1]);
    });
    octx.strokeStyle = colour; octx.lineWidth = width;
    [[0, 1], [2, 3]].forEach(function (e) { // the parallel sides a-b and c-d
      var p = pts[e[0]], q = pts[e[1]]; if (!p || !q) return;
      octx.beginPath(); octx.moveTo(p[0], p[1]); octx.lineTo(q[0], q[1]); octx.stroke();
    });
    octx.setLineDash([3, 3]); octx.lineWidth = 1;
    [[0, 2], [1, 3]].forEach(function (e) {
      var p = pts[e[0]], q = pts[e[1]]; if (!p || !q) return;
      octx.beginPath(); octx.moveTo(p[0], p[1]); octx.lineTo(q[0], q[1]); octx.stroke();
    });
    octx.setLineDash([]);
  }

  // ---------------------------------------------------------------- panel (textContent only)
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
  function featureButton(id) {
    var b = el("button", String(id), "linklike"); b.type = "button";
    b.addEventListener("click", function () { selectId(id, true); });
    return b;
  }
  function fmt(v, p) { return v === null || v === undefined || isNaN(v) ? "–" : Number(v).toPrecision(p || 4); }
  function showPanel() {
    var panel = $("panel"), d = S.d; panel.textContent = "";
    if (S.selected < 0) { panel.appendChild(el("p", "Click a point, or search by id, label or context text.", "hint")); return; }
    var i = S.selected, id = d.ids[i];
    panel.appendChild(el("h2", "Feature " + id));
    var label = d.labels.get(id), auto = d.autoLabels.get(id);
    if (label !== undefined) panel.appendChild(el("p", label, "label"));
    else if (auto !== undefined) {
      var p = el("p", undefined, "label auto"); p.appendChild(el("span", "automatic", "tag"));
      p.appendChild(document.createTextNode(" " + auto)); panel.appendChild(p);
    }
    var dl = el("dl");
    function row(k, v) { dl.appendChild(el("dt", k)); var dd = el("dd"); if (v instanceof Node) dd.appendChild(v); else dd.textContent = v; dl.appendChild(dd); }
    row("id", String(id)); row("layer", String(d.layer)); row("norm", fmt(d.norm[i]));
    if (d.freq) row("firing frequency", fmt(d.freq[i], 3) + " (" + d.nFired[i] + " of " + d.nBlocks + " blocks)");
    Object.keys(d.lobes).map(Number).sort(function (a, b) { return a - b; }).forEach(function (k) {
      var v = d.lobes[k][i]; row("lobe (k=" + k + ")", v < 0 ? "–" : String(v));
    });
    if (d.cofire && d.top) {
      var span = el("span");
      for (var j = 0; j < d.top; j++) {
        var p = d.cofire[i * d.top + j]; if (p < 0) continue;
        span.appendChild(featureButton(p)); span.appendChild(document.createTextNode(" (" + d.cofireN[i * d.top + j] + ") "));
      }
      row("top co-firing", span.childNodes.length ? span : "none");
    }
    var cr = d.byFeature.get(id) || [];
    if (cr.length) {
      var list = el("span");
      cr.slice(0, 20).forEach(function (ci) {
        var c = d.crystals[ci], line = el("div");
        line.appendChild(document.createTextNode(c[7] + " #" + c[0] + ": "));
        [1, 2, 3, 4].forEach(function (j) { line.appendChild(featureButton(c[j])); });
        line.appendChild(document.createTextNode(" cos " + fmt(c[5], 3) + ", score " + fmt(c[8], 3)));
        list.appendChild(line);
      });
      row("crystals", list);
    } else { row("crystals", "none"); }
    if (d.npid) {
      var a = el("a", "Neuronpedia");
      a.href = META.neuronpedia_url + "/" + d.npid.split("/").map(encodeURIComponent).join("/") + "/" + id;
      a.target = "_blank"; a.rel = "noopener noreferrer";
      row("neuronpedia", a);
    }
    panel.appendChild(dl);
    showDashboards(panel, i);
  }
  function showGalaxy() {
    var g = $("galaxy"), d = S.d; g.textContent = "";
    if (!d.galaxy) return;
    g.appendChild(el("h3", "Galaxy: layer " + d.layer));
    var gs = d.galaxy, ci = gs.slope_ci ? " [" + fmt(gs.slope_ci[0], 3) + ", " + fmt(gs.slope_ci[1], 3) + "]" : "";
    var slope = (gs.slope_corrected !== null && gs.slope_corrected !== undefined)
      ? "power-law slope " + fmt(gs.slope_corrected, 3) + ci + " (bias-corrected; raw fit " + fmt(gs.slope, 3) + ")"
      : "power-law slope " + fmt(gs.slope, 3) + ci;
    g.appendChild(el("p", slope + " (null " + fmt(d.galaxy.null_slope, 3) + ")" +
      (d.galaxy.entropy_excess !== null && d.galaxy.entropy_excess !== undefined ? ", clustering entropy excess " + fmt(d.galaxy.entropy_excess, 3) + " nats" : "")));
    var img = document.createElement("img"); img.alt = "spectrum of layer " + d.layer; img.src = d.galaxy.figure; g.appendChild(img);
    (META.figures || []).forEach(function (f) { var im = document.createElement("img"); im.alt = f; im.src = f; g.appendChild(im); });
  }

  // ---------------------------------------------------------------- selection and search
  function select(i, centre) {
    S.selected = i; atlas.selectedId = i >= 0 ? S.d.ids[i] : null;
    if (centre && i >= 0) { S.cx = S.d.xy[2 * i]; S.cy = S.d.xy[2 * i + 1]; redraw(); }
    showPanel(); drawOverlay();
  }
  function selectId(id, centre) { var i = S.d ? S.d.row.get(Number(id)) : undefined; select(i === undefined ? -1 : i, centre); return i !== undefined; }
  function labelOf(d, id) { var l = d.labels.get(id); return l !== undefined ? l : d.autoLabels.get(id); }
  function search(q) {
    var ol = $("results"), d = S.d; ol.textContent = "";
    q = q.trim(); if (!q || !d) return [];
    var hits = [], ql = q.toLowerCase(), i;
    if (/^\d+$/.test(q) && d.row.has(Number(q))) hits.push(Number(q));
    [d.labels, d.autoLabels].forEach(function (m) {
      m.forEach(function (label, id) { if (hits.length < 50 && label.toLowerCase().indexOf(ql) >= 0 && hits.indexOf(id) < 0 && d.row.has(id)) hits.push(id); });
    });
    var D = dash[d.layer], pendingCtx = false;
    if (D && TOK) {
      for (i = 0; i < d.n && hits.length < 50; i++) if (hits.indexOf(d.ids[i]) < 0 && contextText(D, i).indexOf(ql) >= 0) hits.push(d.ids[i]);
    } else if (!/^\d+$/.test(q)) {
      pendingCtx = withDashboards(d.layer, function () { if (S.d === d && $("search").value.trim() === q) search(q); });
    }
    hits.forEach(function (id) {
      var li = el("li"), b = featureButton(id), label = labelOf(d, id);
      b.textContent = String(id) + (label !== undefined ? " — " + label : ""); li.appendChild(b); ol.appendChild(li);
    });
    if (pendingCtx) ol.appendChild(el("li", "searching contexts…", "hint"));
    else if (!hits.length) ol.appendChild(el("li", "no match for " + q, "hint"));
    return hits;
  }
  atlas.search = search;

  // ---------------------------------------------------------------- layers and wiring
  function setStatus(t) { $("status").textContent = t; }
  function setLayer(layer, cb) {
    setStatus("loading layer " + layer + "…");
    loadLayer(layer, function (d) {
      S.d = d; S.selected = -1; S.hover = -1; atlas.layer = d.layer; atlas.selectedId = null;
      $("layer").value = String(d.layer);
      var sel = $("colour"), opts = colourOptions(d), keep = S.colourBy;
      sel.textContent = "";
      opts.forEach(function (o) { var op = el("option", o[1]); op.value = o[0]; sel.appendChild(op); });
      S.colourBy = opts.some(function (o) { return o[0] === keep; }) ? keep : defaultColour(d);
      sel.value = S.colourBy;
      R.setData(d); computeColours(); R.setColours(S.colours);
      resize(); fit(); drawNow(); showPanel(); showGalaxy(); search($("search").value);
      setStatus(d.n + " features" + (d.npid ? " · " + d.npid : "") + " · " + R.name);
      if (cb) cb(d);
    });
  }
  $("title").textContent = META.title || "featuregeo atlas";
  META.layers.forEach(function (l) { var op = el("option", String(l.layer) + " (" + l.n_features + ")"); op.value = String(l.layer); $("layer").appendChild(op); });
  $("layer").addEventListener("change", function (e) { setLayer(Number(e.target.value)); });
  $("colour").addEventListener("change", function (e) { S.colourBy = e.target.value; computeColours(); R.setColours(S.colours); drawNow(); });
  $("crystals").addEventListener("change", drawOverlay);
  $("search").addEventListener("input", function (e) { search(e.target.value); });
  $("search").addEventListener("keydown", function (e) {
    if (e.key === "Enter") { var hits = search(e.target.value); if (hits.length) selectId(hits[0], true); }
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && S.d) select(-1, false); });
  var drag = null;
  overlay.addEventListener("mousedown", function (e) { drag = { x: e.offsetX, y: e.offsetY, cx: S.cx, cy: S.cy, moved: false }; });
  overlay.addEventListener("mousemove", function (e) {
    if (drag && (e.buttons & 1)) {
      var dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) { S.cx = drag.cx - dx / S.scale; S.cy = drag.cy + dy / S.scale; redraw(); return; }
    }
    var i = pick(e.offsetX, e.offsetY, 6);
    if (i !== S.hover) { S.hover = i; drawOverlay(); }
    if (i >= 0) {
      var label = labelOf(S.d, S.d.ids[i]);
      tip.textContent = "feature " + S.d.ids[i] + (label !== undefined ? "\n" + label : "");
      tip.style.left = (e.offsetX + 12) + "px"; tip.style.top = (e.offsetY + 12) + "px"; tip.hidden = false;
    } else { tip.hidden = true; }
  });
  overlay.addEventListener("mouseleave", function () { tip.hidden = true; S.hover = -1; if (S.d) drawOverlay(); });
  overlay.addEventListener("mouseup", function (e) {
    var wasDrag = drag && drag.moved; drag = null;
    if (!wasDrag && S.d) { var i = pick(e.offsetX, e.offsetY, 8); select(i, false); }
  });
  overlay.addEventListener("wheel", function (e) {
    e.preventDefault(); if (!S.d) return;
    var w = toWorld(e.offsetX, e.offsetY), f = Math.exp(-e.deltaY * 0.0015);
    S.scale *= f; S.cx = w[0] - (w[0] - S.cx) / f; S.cy = w[1] - (w[1] - S.cy) / f; redraw();
  }, { passive: false });
  window.addEventListener("resize", function () { if (S.d) { resize(); drawNow(); } });
  if (firstLayer !== null) setLayer(firstLayer); else setStatus("no layers");
})();
