// matih-lite workbench: charts, parallel coordinates, selection, live refresh. No dependencies.
// Every page works without this script; it adds drawing and convenience on top.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0e8a94", "#d1249c", "#6e7781",
                "#7d4e00", "#2f5da8"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attrs) {
    var t = el("text", Object.assign({x: x, y: y}, attrs || {}), parent);
    t.textContent = content;
    return t;
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e7)) return v.toExponential(3);
    return String(Number(v.toPrecision(6)));
  }
  function fmtX(v, axis) {
    if (axis === "time") {
      var d = new Date(v);
      return d.toISOString().replace("T", " ").slice(0, 19);
    }
    if (axis === "relative") return duration(v);
    return (Math.round(v) || 0).toLocaleString("en-US");
  }
  function duration(ms) {
    var s = ms / 1000;
    if (Math.abs(s) < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (Math.abs(s) < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(2) + " h";
  }
  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
    return out;
  }

  // ---- metric charts --------------------------------------------------------------------------------
  function Chart(figure) {
    this.fig = figure;
    this.plot = figure.querySelector(".chart-plot");
    this.readout = figure.querySelector(".chart-readout");
    this.runs = figure.dataset.runs.split(",");
    this.names = figure.dataset.names ? figure.dataset.names.split("|") : this.runs.map(function (r) { return r.slice(0, 8); });
    this.key = figure.dataset.key;
    this.axisSel = figure.querySelector(".chart-axis");
    this.logBox = figure.querySelector(".chart-log");
    this.smooth = figure.querySelector(".chart-smooth");
    this.reset = figure.querySelector(".chart-reset");
    this.range = null;
    this.data = null;
    this.cursor = -1;
    var self = this;
    this.axisSel.addEventListener("change", function () { self.range = null; self.load(); });
    this.logBox.addEventListener("change", function () { self.draw(); });
    this.smooth.addEventListener("input", function () { self.draw(); });
    this.reset.addEventListener("click", function () { self.range = null; self.load(); });
    this.plot.addEventListener("keydown", function (e) { self.key_(e); });
    window.addEventListener("mouseup", function (ev) { self.endDrag(ev); });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      // only a new width asks for new buckets (a taller window, a full-page screenshot, do not)
      resizeTimer = setTimeout(function () {
        if (self.data && Math.abs((self.plot.clientWidth || 0) - (self.drawnWidth || 0)) > 8) self.load();
      }, 300);
    });
  }
  Chart.prototype.axis = function () { return this.axisSel.value; };
  Chart.prototype.load = function () {
    var self = this;
    var axis = this.axis();
    var width = Math.max(50, Math.min(4000, Math.round(this.plot.clientWidth || 600)));
    var q = "runs=" + encodeURIComponent(this.runs.join(",")) + "&key=" + encodeURIComponent(this.key) +
      "&axis=" + (axis === "step" ? "step" : "time") + "&points=" + width;
    if (this.range) q += "&lo=" + Math.floor(this.range[0]) + "&hi=" + Math.ceil(this.range[1]);
    if (!this.data) this.status("loading…");  // a chart already drawn stays until the new one is ready
    this.drawnWidth = width;
    fetch("/ui/api/series?" + q, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (!r.ok) return r.json().then(function (p) { throw new Error(p.detail || r.statusText); });
        return r.json();
      })
      .then(function (data) { self.data = data; self.draw(); })
      .catch(function (err) { self.status("could not load the series: " + err.message); });
  };
  Chart.prototype.status = function (msg) {
    this.plot.textContent = "";
    var p = document.createElement("p");
    p.className = "muted chart-status";
    p.textContent = msg;
    this.plot.appendChild(p);
  };
  Chart.prototype.series = function () {
    // Per run: x (shifted for relative time), y (mean, smoothed when asked), lo/hi (the bucket's min and max).
    var axis = this.axis();
    var alpha = parseFloat(this.smooth.value) || 0;
    var out = [];
    var self = this;
    this.data.series.forEach(function (s, i) {
      if (!s.x.length) return;
      var shift = axis === "relative" ? s.x[0] : 0;
      var xs = s.x.map(function (x, j) { return (x + s.x_end[j]) / 2 - shift; });
      var ys = s.mean.slice();
      var smoothed = null;
      if (alpha > 0) {
        smoothed = [];
        var last = 0, debias = 0;
        for (var j = 0; j < ys.length; j++) {
          if (ys[j] === null) { smoothed.push(null); continue; }
          last = last * alpha + (1 - alpha) * ys[j];
          debias = debias * alpha + (1 - alpha);
          smoothed.push(last / debias);
        }
      }
      out.push({name: self.names[self.runs.indexOf(s.run_id)] || s.run_id.slice(0, 8), color: COLORS[i % COLORS.length],
                x: xs, y: ys, smooth: smoothed, lo: s.min, hi: s.max, count: s.count, points: s.points,
                downsampled: s.downsampled, raw: s});
    });
    return out;
  };
  Chart.prototype.draw = function () {
    if (!this.data) return;
    var series = this.series();
    var log = this.logBox.checked;
    var axis = this.axis();
    if (!series.length) { this.status("no points logged for " + this.key); return; }
    var W = Math.max(this.plot.clientWidth, 200), H = Math.max(this.plot.clientHeight, 120);
    var m = {l: 56, r: 12, t: 8, b: 26};
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    series.forEach(function (s) {
      for (var j = 0; j < s.x.length; j++) {
        xmin = Math.min(xmin, s.x[j]); xmax = Math.max(xmax, s.x[j]);
        var lo = s.lo[j], hi = s.hi[j];
        if (lo !== null && (!log || lo > 0)) ymin = Math.min(ymin, lo);
        if (hi !== null && (!log || hi > 0)) ymax = Math.max(ymax, hi);
      }
    });
    if (!isFinite(ymin)) { this.status(log ? "no positive values to draw on a log scale" : "every value is NaN"); return; }
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    if (ymax === ymin) { var pad = Math.abs(ymin) * 0.05 || 1; ymin -= pad; ymax += pad; }
    var ty = log ? function (v) { return Math.log10(v); } : function (v) { return v; };
    var y0 = ty(ymin), y1 = ty(ymax);
    var sx = function (x) { return m.l + (x - xmin) / (xmax - xmin) * (W - m.l - m.r); };
    var sy = function (v) {
      if (v === null || (log && v <= 0)) return null;
      return H - m.b - (ty(v) - y0) / (y1 - y0) * (H - m.t - m.b);
    };
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, "aria-hidden": "true"});
    var gy = el("g", {"class": "axis"}, svg);
    var yt = log ? ticks(y0, y1, 4).map(function (t) { return Math.pow(10, t); }) : ticks(ymin, ymax, 4);
    yt.forEach(function (t) {
      var y = sy(t);
      if (y === null) return;
      el("line", {x1: m.l, x2: W - m.r, y1: y, y2: y, "class": "gridline"}, gy);
      text(gy, m.l - 4, y + 3, fmt(t), {"text-anchor": "end"});
    });
    var gx = el("g", {"class": "axis"}, svg);
    el("line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}, gx);
    var xt = axis === "step" ? ticks(xmin, xmax, Math.max(2, Math.floor(W / 110))).filter(function (t) {
      return Math.abs(t - Math.round(t)) < 1e-9;  // steps are whole numbers
    }) : ticks(xmin, xmax, Math.max(2, Math.floor(W / 170)));
    xt.forEach(function (t) {
      var x = sx(t);
      el("line", {x1: x, x2: x, y1: H - m.b, y2: H - m.b + 4}, gx);
      text(gx, x, H - m.b + 15, axis === "time" ? fmtX(t, axis).slice(11, 19) : fmtX(t, axis), {"text-anchor": "middle"});
    });
    series.forEach(function (s) {
      if (s.downsampled) {
        // The band from each bucket's min to its max: every spike stays visible however many points a bucket holds.
        var top = [], bottom = [];
        for (var j = 0; j < s.x.length; j++) {
          var a = sy(s.hi[j]), b = sy(s.lo[j]);
          if (a === null || b === null) continue;
          top.push(sx(s.x[j]).toFixed(1) + "," + a.toFixed(1));
          bottom.unshift(sx(s.x[j]).toFixed(1) + "," + b.toFixed(1));
        }
        if (top.length) el("polygon", {points: top.concat(bottom).join(" "), "class": "series-band", fill: s.color,
                                       stroke: s.color}, svg);
      }
      var line = s.smooth || s.y;
      if (s.smooth) el("polyline", {points: path(s.x, s.y), "class": "series-raw", stroke: s.color}, svg);
      el("polyline", {points: path(s.x, line), "class": "series-line", stroke: s.color}, svg);
      if (!s.downsampled && s.x.length <= 60) {  // few points: mark each, so a single value is visible too
        for (var j = 0; j < s.x.length; j++) {
          var py = sy(line[j]);
          if (py !== null) el("circle", {cx: sx(s.x[j]).toFixed(1), cy: py.toFixed(1), r: 2.5, fill: s.color, "class": "series-dot"}, svg);
        }
      }
    });
    function path(xs, ys) {
      var pts = [];
      for (var j = 0; j < xs.length; j++) {
        var y = sy(ys[j]);
        if (y !== null) pts.push(sx(xs[j]).toFixed(1) + "," + y.toFixed(1));
      }
      return pts.join(" ");
    }
    if (series.length > 1) {
      var lg = el("g", {}, svg);
      var lx = m.l + 6;
      series.slice(0, 12).forEach(function (s, i) {
        var y = m.t + 10 + i * 12;
        el("rect", {x: lx, y: y - 7, width: 8, height: 8, fill: s.color}, lg);
        text(lg, lx + 11, y, s.name, {"class": "legend-item"});
      });
    }
    var cursor = el("line", {y1: m.t, y2: H - m.b, "class": "cursor", visibility: "hidden"}, svg);
    var zoom = el("rect", {y: m.t, height: H - m.t - m.b, "class": "zoom-box", visibility: "hidden"}, svg);
    this.plot.textContent = "";
    this.plot.appendChild(svg);
    this.view = {series: series, sx: sx, xmin: xmin, xmax: xmax, m: m, W: W, cursor: cursor, axis: axis};
    this.reset.hidden = !this.range;
    var self = this;
    function xAt(ev) {
      var r = svg.getBoundingClientRect();
      return (ev.clientX - r.left) / r.width * W;
    }
    function toX(px) { return xmin + (px - m.l) / (W - m.l - m.r) * (xmax - xmin); }
    this.view.xAt = xAt;
    this.view.toX = toX;
    this.view.zoom = zoom;
    this.dragFrom = null;
    svg.addEventListener("mousemove", function (ev) {
      var px = xAt(ev);
      self.show(self.nearest(toX(px)));
      if (self.dragFrom !== null) {
        zoom.setAttribute("x", Math.min(self.dragFrom, px));
        zoom.setAttribute("width", Math.abs(px - self.dragFrom));
        zoom.setAttribute("visibility", "visible");
      }
    });
    svg.addEventListener("mouseleave", function () { cursor.setAttribute("visibility", "hidden"); });
    svg.addEventListener("mousedown", function (ev) { if (axis !== "relative") self.dragFrom = xAt(ev); ev.preventDefault(); });
    if (this.cursor >= 0) this.show(Math.min(this.cursor, series[0].x.length - 1));
  };
  Chart.prototype.endDrag = function (ev) {
    var v = this.view;
    if (!v || this.dragFrom === null || this.dragFrom === undefined) return;
    var px = v.xAt(ev), from = this.dragFrom;
    this.dragFrom = null;
    v.zoom.setAttribute("visibility", "hidden");
    if (Math.abs(px - from) < 6) return;
    this.range = [v.toX(Math.min(px, from)), v.toX(Math.max(px, from))];
    this.load();
  };
  Chart.prototype.nearest = function (x) {
    var xs = this.view.series[0].x, lo = 0, hi = xs.length - 1;
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid; else hi = mid; }
    return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
  };
  Chart.prototype.show = function (i) {
    var v = this.view;
    if (!v || i < 0) return;
    this.cursor = i;
    var first = v.series[0];
    var x = first.x[i];
    v.cursor.setAttribute("x1", v.sx(x));
    v.cursor.setAttribute("x2", v.sx(x));
    v.cursor.setAttribute("visibility", "visible");
    var raw = first.raw;
    var at = v.axis === "step" ? (raw.x[i] === raw.x_end[i] ? "step " + fmtX(raw.x[i], "step") :
      "steps " + fmtX(raw.x[i], "step") + "–" + fmtX(raw.x_end[i], "step")) : fmtX(x, v.axis);
    var parts = v.series.map(function (s) {
      var j = s === first ? i : nearestIn(s.x, x);
      var value = (s.smooth ? s.smooth[j] : s.y[j]);
      var spread = s.count[j] > 1 ? " (min " + fmt(s.lo[j]) + ", max " + fmt(s.hi[j]) + ", " + s.count[j] + " points)" : "";
      return (v.series.length > 1 ? s.name + ": " : "") + fmt(value) + spread;
    });
    this.readout.textContent = at + " — " + parts.join("; ");
  };
  function nearestIn(xs, x) {
    var best = 0;
    for (var j = 1; j < xs.length; j++) if (Math.abs(xs[j] - x) < Math.abs(xs[best] - x)) best = j;
    return best;
  }
  Chart.prototype.key_ = function (e) {
    if (!this.view) return;
    var n = this.view.series[0].x.length;
    var i = this.cursor < 0 ? 0 : this.cursor;
    var step = e.shiftKey ? Math.max(1, Math.round(n / 20)) : 1;
    if (e.key === "ArrowRight") i = Math.min(n - 1, i + step);
    else if (e.key === "ArrowLeft") i = Math.max(0, i - step);
    else if (e.key === "Home") i = 0;
    else if (e.key === "End") i = n - 1;
    else if (e.key === "Escape" && this.range) { this.range = null; this.load(); return; }
    else return;
    e.preventDefault();
    this.show(i);
  };

  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { observer.unobserve(entry.target); entry.target._chart.load(); }
    });
  }, {rootMargin: "200px"}) : null;

  function startChart(figure) {
    if (figure._chart) return;
    figure._chart = new Chart(figure);
    if (observer) observer.observe(figure); else figure._chart.load();
  }

  function chartFigure(runs, key) {
    // The same markup as the chart macro of the templates.
    var f = document.createElement("figure");
    f.className = "chart";
    f.dataset.runs = runs;
    f.dataset.key = key;
    f.innerHTML = '<figcaption><span class="chart-title"></span></figcaption><div class="chart-controls">' +
      '<label>x <select class="chart-axis"><option value="step">step</option><option value="time">wall time</option>' +
      '<option value="relative">relative time</option></select></label><label><input type="checkbox" class="chart-log"> log scale</label>' +
      '<label>smoothing <input type="range" class="chart-smooth" min="0" max="0.99" step="0.01" value="0"></label>' +
      '<button type="button" class="chart-reset link" hidden>reset zoom</button></div>' +
      '<div class="chart-plot" tabindex="0" role="img"></div><p class="chart-readout" aria-live="polite"></p>';
    f.querySelector(".chart-title").textContent = key;
    f.querySelector(".chart-axis").setAttribute("aria-label", "x-axis of " + key);
    f.querySelector(".chart-smooth").setAttribute("aria-label", "smoothing of " + key);
    f.querySelector(".chart-plot").setAttribute("aria-label", "chart of " + key + "; arrow keys move the cursor, drag to zoom");
    return f;
  }

  function setupChartToggles() {
    var box = document.getElementById("charts");
    if (!box) return;
    document.querySelectorAll(".chart-toggle").forEach(function (button) {
      button.addEventListener("click", function () {
        var key = button.dataset.key;
        var existing = Array.prototype.find.call(box.querySelectorAll("figure.chart"), function (f) { return f.dataset.key === key; });
        if (existing) {
          existing.remove();
          button.setAttribute("aria-pressed", "false");
          button.textContent = "show";
          return;
        }
        var f = chartFigure(box.dataset.run, key);
        box.insertBefore(f, box.firstChild);
        button.setAttribute("aria-pressed", "true");
        button.textContent = "hide";
        startChart(f);
        f.scrollIntoView({block: "nearest"});
      });
    });
  }

  // ---- parallel coordinates ----------------------------------------------------------------------------
  function Parallel(figure, data) {
    this.fig = figure;
    this.data = data;
    this.readout = document.getElementById("parallel-readout");
    this.hot = -1;
    var self = this;
    figure.addEventListener("keydown", function (e) {
      var n = data.runs.length;
      if (e.key === "ArrowDown" || e.key === "ArrowRight") self.highlight((self.hot + 1) % n);
      else if (e.key === "ArrowUp" || e.key === "ArrowLeft") self.highlight((self.hot - 1 + n) % n);
      else if (e.key === "Escape") self.highlight(-1);
      else return;
      e.preventDefault();
    });
    window.addEventListener("resize", function () { self.draw(); });
    this.draw();
  }
  Parallel.prototype.axes = function () {
    var d = this.data;
    var axes = d.params.map(function (k) {
      return {name: k, values: d.runs.map(function (r) { return r.params[k] === undefined ? null : r.params[k]; })};
    });
    if (d.metric) axes.push({name: d.metric, metric: true, values: d.runs.map(function (r) {
      var v = r.metrics[d.metric]; return v === undefined ? null : v; })});
    axes.forEach(function (a) {
      var present = a.values.filter(function (v) { return v !== null && v !== ""; });
      a.numeric = present.length > 0 && present.every(function (v) { return v !== "" && isFinite(Number(v)); });
      if (a.numeric) {
        var nums = present.map(Number);
        a.lo = Math.min.apply(null, nums); a.hi = Math.max.apply(null, nums);
        if (a.lo === a.hi) { a.lo -= 1; a.hi += 1; }
      } else {
        a.cats = Array.from(new Set(present.map(String))).sort();
      }
    });
    return axes;
  };
  Parallel.prototype.draw = function () {
    var d = this.data, fig = this.fig;
    var axes = this.axes();
    if (!axes.length || !d.runs.length) { fig.textContent = "nothing to plot"; return; }
    var W = Math.max(fig.clientWidth - 16, 280), H = 320;
    var m = {l: 30, r: 60, t: 30, b: 30};
    var gap = axes.length > 1 ? (W - m.l - m.r) / (axes.length - 1) : 0;
    var inner = H - m.t - m.b;
    function y(a, v) {
      if (v === null || v === "") return H - m.b + 14;  // below the axis: no value
      if (a.numeric) return m.t + (1 - (Number(v) - a.lo) / (a.hi - a.lo)) * inner;
      var i = a.cats.indexOf(String(v));
      return a.cats.length > 1 ? m.t + i / (a.cats.length - 1) * inner : m.t + inner / 2;
    }
    var metric = axes[axes.length - 1].metric ? axes[axes.length - 1] : null;
    var goal = metric ? d.goals[metric.name] : "max";
    function color(v) {
      if (!metric || v === null || !metric.numeric) return "#6e7781";
      var t = (Number(v) - metric.lo) / (metric.hi - metric.lo);
      if (goal === "min") t = 1 - t;
      var r = Math.round(9 + t * (188 - 9)), g = Math.round(105 - t * (105 - 76)), b = Math.round(218 - t * 218);
      return "rgb(" + r + "," + g + "," + b + ")";
    }
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, "aria-hidden": "true"});
    var lines = [];
    var self = this;
    d.runs.forEach(function (r, i) {
      var pts = axes.map(function (a, k) { return (m.l + k * gap).toFixed(1) + "," + y(a, a.values[i]).toFixed(1); });
      var line = el("polyline", {points: pts.join(" "), "class": "pc-line", stroke: color(metric ? metric.values[i] : null)}, svg);
      line.addEventListener("mouseenter", function () { self.highlight(i); });
      lines.push(line);
    });
    axes.forEach(function (a, k) {
      var g = el("g", {"class": "pc-axis"}, svg);
      var x = m.l + k * gap;
      el("line", {x1: x, x2: x, y1: m.t, y2: H - m.b, stroke: "#57606a"}, g);
      text(g, x, m.t - 12, a.name.length > 18 ? a.name.slice(0, 17) + "…" : a.name,
           {"text-anchor": "middle", "class": "pc-name"});
      var labels = a.numeric ? [[a.hi, m.t], [a.lo, H - m.b]] : a.cats.slice(0, 8).map(function (c) { return [c, y(a, c)]; });
      labels.forEach(function (l) {
        text(g, x + 4, l[1] + 3, a.numeric ? fmt(l[0]) : String(l[0]).slice(0, 14), {});
      });
    });
    fig.textContent = "";
    fig.appendChild(svg);
    this.lines = lines;
    this.axesShown = axes;
    if (this.hot >= 0) this.highlight(this.hot);
  };
  Parallel.prototype.highlight = function (i) {
    this.hot = i;
    var lines = this.lines || [];
    lines.forEach(function (l, j) {
      l.classList.toggle("hot", j === i);
      l.classList.toggle("dim", i >= 0 && j !== i);
    });
    if (i < 0 || !this.readout) { if (this.readout) this.readout.textContent = ""; return; }
    if (lines[i]) lines[i].parentNode.appendChild(lines[i]);
    var r = this.data.runs[i];
    this.readout.textContent = r.name + ": " + this.axesShown.map(function (a) {
      var v = a.values[i];
      return a.name + " = " + (v === null ? "–" : (a.metric ? fmt(v) : v));
    }).join(", ");
  };

  // ---- runs table: selection and compare -------------------------------------------------------------
  function setupSelection() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    var boxes = function () { return document.querySelectorAll('input[name="runs"][form="compare-form"]'); };
    var count = document.getElementById("selection-count");
    var button = document.getElementById("compare-button");
    function update() {
      var n = Array.prototype.filter.call(boxes(), function (b) { return b.checked; }).length;
      count.textContent = n ? n + " selected" + (n < 2 ? " (pick at least 2)" : n > 100 ? " (at most 100)" : "") : "";
      button.disabled = n < 2 || n > 100;
    }
    document.addEventListener("change", function (e) {
      if (e.target.matches && e.target.matches('input[name="runs"][form="compare-form"]')) update();
    });
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      update();
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var ids = Array.prototype.filter.call(boxes(), function (b) { return b.checked; }).map(function (b) { return b.value; });
      if (ids.length < 2 || ids.length > 100) { update(); return; }
      window.location.assign("/ui/compare?runs=" + ids.map(encodeURIComponent).join(","));
    });
    update();
  }

  function setupDiffToggle() {
    var toggle = document.getElementById("diff-toggle");
    var table = document.getElementById("compare-table");
    if (!toggle || !table) return;
    function flip(e) {
      e.preventDefault();
      var on = toggle.getAttribute("aria-pressed") !== "true";
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      table.classList.toggle("only-diff", on);
      var u = new URL(window.location.href);
      if (on) u.searchParams.set("diff", "1"); else u.searchParams.delete("diff");
      window.history.replaceState(null, "", u.pathname + u.search);
      // the metric picker's form keeps the toggle when it reloads the page
      document.querySelectorAll('form[action="/ui/compare"]').forEach(function (form) {
        var field = form.querySelector('input[name="diff"]');
        if (on && !field) {
          field = document.createElement("input");
          field.type = "hidden"; field.name = "diff"; field.value = "1";
          form.appendChild(field);
        } else if (!on && field) {
          field.remove();
        }
      });
    }
    toggle.addEventListener("click", flip);
    toggle.addEventListener("keydown", function (e) { if (e.key === " ") flip(e); });
  }

  function setupAutosubmit() {
    document.querySelectorAll("select.autosubmit").forEach(function (s) {
      s.addEventListener("change", function () { s.form.submit(); });
    });
  }

  // ---- live parts: refreshed sections and job logs -----------------------------------------------------
  function setupRefresh() {
    document.querySelectorAll("[data-refresh]").forEach(function (section) {
      var every = Math.max(2, parseInt(section.dataset.every, 10) || 5) * 1000;
      function tick() {
        if (document.hidden) { setTimeout(tick, every); return; }
        fetch(section.dataset.refresh, {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html !== null) section.innerHTML = html; })
          .catch(function () { /* the next tick tries again */ })
          .then(function () { setTimeout(tick, every); });
      }
      setTimeout(tick, every);
    });
  }

  function setupJobLog() {
    var pre = document.getElementById("job-log");
    if (!pre || pre.dataset.active !== "true") return;
    var offset = parseInt(pre.dataset.offset, 10) || 0;
    function tick() {
      fetch(pre.dataset.url + "?offset=" + offset, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) { setTimeout(tick, 4000); return; }
          if (body.text) {
            var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.appendChild(document.createTextNode(body.text));
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
          offset = body.offset;
          var badge = document.querySelector("#job-status .badge");
          if (badge) { badge.textContent = body.status; badge.className = "badge s-" + body.status.toLowerCase(); }
          var msg = document.getElementById("job-message");
          if (msg) msg.textContent = body.message || "";
          if (body.active) setTimeout(tick, 2000);
          else { var live = document.getElementById("log-live"); if (live) live.textContent = "(ended)"; }
        })
        .catch(function () { setTimeout(tick, 4000); });
    }
    setTimeout(tick, 1500);
  }

  function init() {
    document.querySelectorAll("figure.chart").forEach(startChart);
    setupChartToggles();
    var pc = document.getElementById("parallel"), pcData = document.getElementById("parallel-data");
    if (pc && pcData) new Parallel(pc, JSON.parse(pcData.textContent));
    setupSelection();
    setupDiffToggle();
    setupAutosubmit();
    setupRefresh();
    setupJobLog();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
