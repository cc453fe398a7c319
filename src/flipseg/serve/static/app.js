/* flipseg serve: the review page. Plain JavaScript, no build step, no external resources.
 *
 * Arrays are indexed [z, y, x] as in flipseg (a 2D image is one slice, D = 1). A view shows
 * one plane: axial (y rows, x columns), coronal (z rows, x columns) or sagittal (z rows,
 * y columns). Masks travel as run lengths over C-order pixels, zeros first.
 */
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const AXES = ["z", "y", "x"];
  const PLANES = [
    { name: "axial", u: 2, v: 1, f: 0 },
    { name: "coronal", u: 2, v: 0, f: 1 },
    { name: "sagittal", u: 1, v: 0, f: 2 },
  ];
  const MASK_RGB = [255, 70, 50];
  const MASK_ALPHA = 0.42;
  const VOTER_RGB = [[80, 170, 255], [60, 230, 120], [190, 110, 255], [255, 150, 40]];
  const BOX_COLOUR = "#ffd400";
  const HANDLE = 5;

  const S = {
    info: null, items: [], queue: [], tab: "all", cur: null, tool: "box", showVoters: false,
    win: 255, lev: 127.5, brush: 6, undo: [], latencies: [], shown: 0, pending: null,
    segBusy: false, views: [], space: false, lut: null, chain: Promise.resolve(),
  };

  /** Run a change after the ones before it and after any segmentation in flight, so each
   * change is made on the version the last one returned (keys pressed quickly stay in order). */
  function act(fn) {
    S.chain = S.chain.then(async () => {
      while (S.segBusy) await new Promise((r) => setTimeout(r, 20));
      return fn();
    }).catch(fail);
    return S.chain;
  }

  // ------------------------------------------------------------------ server
  async function api(method, path, body) {
    const opt = { method, headers: {}, credentials: "same-origin" };
    if (method !== "GET") {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body === undefined ? {} : body);
    }
    const r = await fetch(path, opt);
    const type = r.headers.get("content-type") || "";
    const data = type.includes("json") ? await r.json() : await r.arrayBuffer();
    if (!r.ok) {
      const err = new Error((data && data.error) || r.status + " " + r.statusText);
      err.status = r.status;
      throw err;
    }
    return { data, headers: r.headers };
  }

  function decodeRle(rle) {
    const n = rle.shape.reduce((a, b) => a * b, 1);
    const out = new Uint8Array(n);
    let p = 0, v = 0;
    for (const c of rle.counts) {
      if (v) out.fill(1, p, p + c);
      p += c;
      v ^= 1;
    }
    return out;
  }

  function encodeRle(arr, shape) {
    const counts = [];
    let v = 0, run = 0;
    for (let i = 0; i < arr.length; i++) {
      const b = arr[i] ? 1 : 0;
      if (b !== v) { counts.push(run); run = 0; v = b; }
      run++;
    }
    counts.push(run);
    return { shape, counts };
  }

  // ------------------------------------------------------------------ messages
  function say(text, kind, stale) {
    $("#message-text").textContent = text;
    $("#message").className = kind === "info" ? "info" : "";
    $("#message").hidden = false;
    $("#reload").hidden = !stale;
  }
  function fail(err) {
    say(err.message || String(err), "error", err.status === 409);
  }
  function hint(text) { $("#item-hint").textContent = text || ""; }

  // ------------------------------------------------------------------ the current item
  function shape3() { const s = S.cur.shape; return s.length === 2 ? [1, s[0], s[1]] : s.slice(); }
  function strides() { const s = shape3(); return [s[1] * s[2], s[2], 1]; }

  function boxFromList(b) {
    if (!b) return { x: null, y: null, z: S.cur.dims === 2 ? [0, 1] : null };
    return { x: [b[0], b[2]], y: [b[1], b[3]], z: b.length === 6 ? [b[4], b[5]] : [0, 1] };
  }
  function boxComplete(box) { return box.x && box.y && box.z; }
  function boxToList(box) {
    const l = [box.x[0], box.y[0], box.x[1], box.y[1]];
    return S.cur.dims === 3 ? l.concat([box.z[0], box.z[1]]) : l;
  }
  function range(box, axis) { return box[AXES[axis]]; }
  function setRange(box, axis, r) { box[AXES[axis]] = r; }

  function snapshot() {
    const c = S.cur;
    return { id: c.id, box: JSON.parse(JSON.stringify(c.box)), mask: c.mask ? c.mask.slice() : null,
      state: c.state };
  }

  function applyDetail(d) {
    const c = S.cur;
    c.version = d.version; c.state = d.state; c.quality = d.quality; c.method = d.method;
    c.box = boxFromList(d.box);
    c.mask = d.mask ? decodeRle(d.mask) : null;
    c.voters = {};
    for (const [k, v] of Object.entries(d.voters || {})) c.voters[k] = decodeRle(v);
    const item = S.items.find((it) => it.id === c.id);
    if (item) Object.assign(item, { state: d.state, version: d.version, quality: d.quality, box: d.box });
    showHead();
    renderAll();
    renderLegend();
  }

  async function openItem(id) {
    if (id === undefined || id === null) return;
    const [{ data: d }, img] = await Promise.all([
      api("GET", `/api/items/${id}`),
      api("GET", `/api/items/${id}/image`),
    ]);
    const keep = S.cur && S.cur.id === id;
    S.cur = { id, dims: d.shape.length, shape: d.shape, spacing: d.spacing, name: d.case_id,
      img: new Uint8Array(img.data), slices: keep ? S.cur.slices : null };
    applyDetailSilently(d);
    if (!S.cur.slices) {
      const s = shape3();
      S.cur.slices = [0, 1, 2].map((a) => {
        const r = range(S.cur.box, a);
        return r && !(S.cur.dims === 2 && a === 0) ? Math.floor((r[0] + r[1] - 1) / 2) : Math.floor(s[a] / 2);
      });
    }
    buildViews();
    applyDetail(d);
    renderList();
    $("#message").hidden = true;
  }
  function applyDetailSilently(d) {
    S.cur.box = boxFromList(d.box);
  }

  function showHead() {
    const c = S.cur;
    $("#item-name").textContent = c.name;
    const st = $("#item-state");
    st.textContent = stateText(c.state);
    st.className = "badge " + c.state;
    $("#item-quality").textContent = c.quality === null || c.quality === undefined
      ? (S.info && !S.info.quality ? "quality: no model" : "")
      : "quality " + c.quality.toFixed(2);
    if (!boxComplete(c.box)) {
      hint(c.dims === 3 ? "draw the box in two views (e.g. axial, then coronal)" : "draw a box around the lesion");
    } else if (!c.mask) hint("segmenting needs a box: drag to draw one");
    else hint("");
  }
  function stateText(s) {
    return { todo: "to do", proposed: "proposed", accepted: "reviewed ✓", rejected: "reviewed ✗" }[s] || s;
  }

  // ------------------------------------------------------------------ views
  class View {
    constructor(plane, root) {
      this.p = plane;
      this.el = document.createElement("div");
      this.el.className = "view";
      this.el.dataset.plane = plane.name;
      this.canvas = document.createElement("canvas");
      this.el.appendChild(this.canvas);
      this.ctx = this.canvas.getContext("2d");
      this.off = document.createElement("canvas");
      if (S.cur.dims === 3) {
        const bar = document.createElement("div");
        bar.className = "view-bar";
        bar.innerHTML = `<span class="plane">${plane.name}</span><input type="range" min="0" step="1">` +
          `<span class="slice-no"></span>`;
        this.slider = bar.querySelector("input");
        this.slider.max = String(shape3()[plane.f] - 1);
        this.slider.value = String(S.cur.slices[plane.f]);
        this.slider.addEventListener("input", () => {
          S.cur.slices[plane.f] = Number(this.slider.value);
          renderAll();
        });
        this.el.appendChild(bar);
      }
      root.appendChild(this.el);
      this.scale = 1; this.ox = 0; this.oy = 0;
      const sp = S.cur.spacing.length === 2 ? [1, S.cur.spacing[0], S.cur.spacing[1]] : S.cur.spacing;
      this.aspect = S.cur.dims === 3 ? sp[plane.v] / sp[plane.u] : 1;
      this.drag = null;
      this.listen();
    }
    get nu() { return shape3()[this.p.u]; }
    get nv() { return shape3()[this.p.v]; }
    resize() {
      const r = this.canvas.getBoundingClientRect();
      this.canvas.width = Math.max(1, Math.floor(r.width));
      this.canvas.height = Math.max(1, Math.floor(r.height));
    }
    fit() {
      this.resize();
      const w = this.canvas.width, h = this.canvas.height;
      this.scale = Math.min(w / this.nu, h / (this.nv * this.aspect)) * 0.96;
      this.ox = (w - this.nu * this.scale) / 2;
      this.oy = (h - this.nv * this.scale * this.aspect) / 2;
    }
    toImage(cx, cy) { return { u: (cx - this.ox) / this.scale, v: (cy - this.oy) / (this.scale * this.aspect) }; }
    toCanvas(u, v) { return { x: this.ox + u * this.scale, y: this.oy + v * this.scale * this.aspect }; }
    index(u, v) {
      const c = [0, 0, 0];
      c[this.p.u] = u; c[this.p.v] = v; c[this.p.f] = S.cur.slices[this.p.f];
      const st = strides();
      return c[0] * st[0] + c[1] * st[1] + c[2] * st[2];
    }

    paintImage() {
      const c = S.cur, nu = this.nu, nv = this.nv, st = strides();
      const su = st[this.p.u], sv = st[this.p.v], base = S.cur.slices[this.p.f] * st[this.p.f];
      this.off.width = nu; this.off.height = nv;
      const octx = this.off.getContext("2d");
      const im = octx.createImageData(nu, nv);
      const px = im.data, lut = S.lut, img = c.img, mask = c.mask;
      const a = MASK_ALPHA, ia = 1 - a;
      for (let v = 0; v < nv; v++) {
        for (let u = 0; u < nu; u++) {
          const i = base + u * su + v * sv, o = (v * nu + u) * 4, g = lut[img[i]];
          if (mask && mask[i]) {
            px[o] = g * ia + MASK_RGB[0] * a; px[o + 1] = g * ia + MASK_RGB[1] * a; px[o + 2] = g * ia + MASK_RGB[2] * a;
          } else { px[o] = g; px[o + 1] = g; px[o + 2] = g; }
          px[o + 3] = 255;
        }
      }
      if (S.showVoters) {
        Object.values(c.voters).forEach((vm, k) => {
          const col = VOTER_RGB[k % VOTER_RGB.length];
          for (let v = 0; v < nv; v++) {
            for (let u = 0; u < nu; u++) {
              const i = base + u * su + v * sv;
              if (!vm[i]) continue;
              const edge = u === 0 || v === 0 || u === nu - 1 || v === nv - 1 || !vm[i - su] || !vm[i + su] ||
                !vm[i - sv] || !vm[i + sv];
              if (edge) { const o = (v * nu + u) * 4; px[o] = col[0]; px[o + 1] = col[1]; px[o + 2] = col[2]; }
            }
          }
        });
      }
      octx.putImageData(im, 0, 0);
    }

    render() {
      const ctx = this.ctx, c = S.cur;
      if (this.canvas.width === 0) this.fit();
      this.paintImage();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.off, this.ox, this.oy, this.nu * this.scale, this.nv * this.scale * this.aspect);
      if (c.dims === 3) this.drawCrosshair();
      this.drawBox();
      if (this.slider) {
        this.slider.value = String(c.slices[this.p.f]);
        this.el.querySelector(".slice-no").textContent = `${c.slices[this.p.f] + 1}/${shape3()[this.p.f]}`;
      }
    }

    drawCrosshair() {
      const ctx = this.ctx, c = S.cur;
      ctx.save();
      ctx.strokeStyle = "rgba(0, 200, 255, 0.45)";
      ctx.setLineDash([3, 4]);
      const a = this.toCanvas(c.slices[this.p.u] + 0.5, 0), b = this.toCanvas(0, c.slices[this.p.v] + 0.5);
      const e = this.toCanvas(this.nu, this.nv);
      ctx.beginPath();
      ctx.moveTo(a.x, this.oy); ctx.lineTo(a.x, e.y);
      ctx.moveTo(this.ox, b.y); ctx.lineTo(e.x, b.y);
      ctx.stroke();
      ctx.restore();
    }

    rect() {
      const box = this.drag && this.drag.box ? this.drag.box : S.cur.box;
      return { u: range(box, this.p.u), v: range(box, this.p.v), f: range(box, this.p.f) };
    }

    drawBox() {
      const ctx = this.ctx, r = this.rect(), sl = S.cur.slices[this.p.f];
      ctx.save();
      ctx.strokeStyle = BOX_COLOUR;
      ctx.lineWidth = 1.5;
      const inside = !r.f || (sl >= r.f[0] && sl < r.f[1]) || S.cur.dims === 2;
      if (!inside) ctx.setLineDash([5, 4]);
      if (r.u && r.v) {
        const a = this.toCanvas(r.u[0], r.v[0]), b = this.toCanvas(r.u[1], r.v[1]);
        ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
        if (S.tool === "box" && inside) {
          ctx.fillStyle = BOX_COLOUR;
          for (const h of this.handles()) ctx.fillRect(h.x - HANDLE / 2, h.y - HANDLE / 2, HANDLE, HANDLE);
        }
      } else if (r.u || r.v) {  // 3D: one range known from another view
        ctx.setLineDash([5, 4]);
        const e = this.toCanvas(this.nu, this.nv);
        ctx.beginPath();
        if (r.u) for (const u of r.u) { const p = this.toCanvas(u, 0); ctx.moveTo(p.x, this.oy); ctx.lineTo(p.x, e.y); }
        if (r.v) for (const v of r.v) { const p = this.toCanvas(0, v); ctx.moveTo(this.ox, p.y); ctx.lineTo(e.x, p.y); }
        ctx.stroke();
      }
      ctx.restore();
    }

    handles() {
      const r = this.rect();
      if (!r.u || !r.v) return [];
      const a = this.toCanvas(r.u[0], r.v[0]), b = this.toCanvas(r.u[1], r.v[1]);
      const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
      return [
        { x: a.x, y: a.y, eu: 0, ev: 0 }, { x: mx, y: a.y, eu: -1, ev: 0 }, { x: b.x, y: a.y, eu: 1, ev: 0 },
        { x: b.x, y: my, eu: 1, ev: -1 }, { x: b.x, y: b.y, eu: 1, ev: 1 }, { x: mx, y: b.y, eu: -1, ev: 1 },
        { x: a.x, y: b.y, eu: 0, ev: 1 }, { x: a.x, y: my, eu: 0, ev: -1 },
      ];  // eu/ev: which end of the u/v range the handle moves (0 low, 1 high, -1 none)
    }

    // -------------------------------------------------------------- input
    listen() {
      const cv = this.canvas;
      cv.addEventListener("contextmenu", (e) => e.preventDefault());
      cv.addEventListener("wheel", (e) => {
        e.preventDefault();
        const p = this.local(e), k = Math.exp(-e.deltaY * 0.0015);
        const img = this.toImage(p.x, p.y);
        this.scale = Math.min(64, Math.max(0.05, this.scale * k));
        this.ox = p.x - img.u * this.scale;
        this.oy = p.y - img.v * this.scale * this.aspect;
        this.render();
      }, { passive: false });
      cv.addEventListener("pointerdown", (e) => this.down(e));
      cv.addEventListener("pointermove", (e) => this.move(e));
      cv.addEventListener("pointerup", (e) => this.up(e));
      cv.addEventListener("pointercancel", () => { this.drag = null; this.render(); });
    }
    local(e) {
      const r = this.canvas.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    }
    clampU(u) { return Math.min(this.nu, Math.max(0, Math.round(u))); }
    clampV(v) { return Math.min(this.nv, Math.max(0, Math.round(v))); }

    down(e) {
      if (!S.cur) return;
      const p = this.local(e);
      this.canvas.setPointerCapture(e.pointerId);
      const img = this.toImage(p.x, p.y);
      if (e.button === 2) { this.drag = { mode: "wl", x: p.x, y: p.y, win: S.win, lev: S.lev }; return; }
      if (e.button === 1 || S.tool === "pan" || S.space) {
        this.drag = { mode: "pan", x: p.x, y: p.y, ox: this.ox, oy: this.oy };
        return;
      }
      if (e.button !== 0) return;
      if (S.tool === "brush" || S.tool === "eraser") {
        if (!S.cur.mask) { say("segment a box first, then correct its mask", "info"); return; }
        this.drag = { mode: "paint", value: S.tool === "brush" ? 1 : 0, snap: snapshot(), last: img };
        this.paint(img, img);
        return;
      }
      // box tool: a handle, the inside, or a new box
      const box = JSON.parse(JSON.stringify(S.cur.box));
      const r = { u: range(box, this.p.u), v: range(box, this.p.v) };
      const hit = this.handles().find((h) => Math.abs(h.x - p.x) <= HANDLE + 2 && Math.abs(h.y - p.y) <= HANDLE + 2);
      const snap = snapshot();
      if (hit) {
        this.drag = { mode: "resize", h: hit, box, snap, moved: false };
      } else if (r.u && r.v && img.u > r.u[0] && img.u < r.u[1] && img.v > r.v[0] && img.v < r.v[1]) {
        this.drag = { mode: "move", start: img, u0: r.u.slice(), v0: r.v.slice(), box, snap, moved: false };
      } else {
        this.drag = { mode: "new", start: img, box, snap, moved: false };
      }
    }

    move(e) {
      const d = this.drag;
      if (!d) return;
      const p = this.local(e), img = this.toImage(p.x, p.y);
      if (d.mode === "pan") {
        this.ox = d.ox + p.x - d.x; this.oy = d.oy + p.y - d.y;
        this.render();
      } else if (d.mode === "wl") {
        S.win = Math.min(255, Math.max(1, d.win + (p.x - d.x)));
        S.lev = Math.min(255, Math.max(0, d.lev - (p.y - d.y)));
        setContrast();
      } else if (d.mode === "paint") {
        this.paint(d.last, img);
        d.last = img;
      } else {
        d.moved = true;
        if (d.mode === "new") {
          const u = [d.start.u, img.u].map((x) => this.clampU(x)).sort((a, b) => a - b);
          const v = [d.start.v, img.v].map((x) => this.clampV(x)).sort((a, b) => a - b);
          setRange(d.box, this.p.u, u); setRange(d.box, this.p.v, v);
        } else if (d.mode === "move") {
          const du = Math.round(img.u - d.start.u), dv = Math.round(img.v - d.start.v);
          const su = Math.min(Math.max(du, -d.u0[0]), this.nu - d.u0[1]);
          const sv = Math.min(Math.max(dv, -d.v0[0]), this.nv - d.v0[1]);
          setRange(d.box, this.p.u, [d.u0[0] + su, d.u0[1] + su]);
          setRange(d.box, this.p.v, [d.v0[0] + sv, d.v0[1] + sv]);
        } else {
          const u = range(d.box, this.p.u).slice(), v = range(d.box, this.p.v).slice();
          if (d.h.eu >= 0) u[d.h.eu] = this.clampU(img.u);
          if (d.h.ev >= 0) v[d.h.ev] = this.clampV(img.v);
          setRange(d.box, this.p.u, u.sort((a, b) => a - b));
          setRange(d.box, this.p.v, v.sort((a, b) => a - b));
        }
        renderAll();
      }
    }

    up(e) {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      const t0 = performance.now();
      if (d.mode === "paint") {
        pushUndo(d.snap);
        act(() => saveCurrent({ mask: true }));
        return;
      }
      if (d.mode === "new" || d.mode === "move" || d.mode === "resize") {
        const u = range(d.box, this.p.u), v = range(d.box, this.p.v);
        if (!d.moved || !u || !v || u[1] - u[0] < 2 || v[1] - v[0] < 2) { renderAll(); return; }
        if (S.cur.dims === 3 && !range(d.box, this.p.f)) {
          // the first view of a 3D box: a thin slab around this slice until another view sets it
          const sl = S.cur.slices[this.p.f];
          d.box.pending = AXES[this.p.f];
          setRange(d.box, this.p.f, [sl, sl + 1]);
        } else if (d.box.pending && d.box.pending !== AXES[this.p.u] && d.box.pending !== AXES[this.p.v]) {
          // still missing the third axis
        } else {
          delete d.box.pending;
        }
        pushUndo(d.snap);
        S.cur.box = d.box;
        renderAll();
        if (S.cur.box.pending) {
          hint(`now draw the box in a view that shows ${S.cur.box.pending} (coronal or sagittal)`);
          return;
        }
        requestSegment(t0);
      }
    }

    paint(a, b) {
      const c = S.cur, r = S.brush / 2, val = this.drag.value;
      const steps = Math.max(1, Math.ceil(Math.hypot(b.u - a.u, (b.v - a.v) * this.aspect) / Math.max(1, r / 2)));
      for (let s = 0; s <= steps; s++) {
        const cu = a.u + (b.u - a.u) * s / steps, cv = a.v + (b.v - a.v) * s / steps;
        const rv = r / this.aspect;
        for (let v = Math.max(0, Math.floor(cv - rv)); v <= Math.min(this.nv - 1, Math.ceil(cv + rv)); v++) {
          for (let u = Math.max(0, Math.floor(cu - r)); u <= Math.min(this.nu - 1, Math.ceil(cu + r)); u++) {
            const du = u + 0.5 - cu, dv = (v + 0.5 - cv) * this.aspect;
            if (du * du + dv * dv <= r * r) c.mask[this.index(u, v)] = val;
          }
        }
      }
      renderAll();
    }
  }

  function buildViews() {
    const root = $("#views");
    root.innerHTML = "";
    root.className = S.cur.dims === 3 ? "d3" : "d2";
    const planes = S.cur.dims === 3 ? PLANES : [PLANES[0]];
    S.views = planes.map((p) => new View(p, root));
    if (S.cur.dims === 3) {
      const info = document.createElement("div");
      info.id = "info3d";
      root.appendChild(info);
    }
    S.views.forEach((v) => v.fit());
    setTool(S.tool);
  }

  function renderAll() {
    if (!S.cur) return;
    S.views.forEach((v) => v.render());
    if (S.cur.dims === 3) renderInfo3d();
  }

  /** The fourth cell of a volume's views: its box, mask size and voxel spacing. */
  function renderInfo3d() {
    const c = S.cur, el = $("#info3d");
    if (!el) return;
    const sp = c.spacing, voxel = sp[0] * sp[1] * sp[2];
    const r = (a) => (c.box[a] ? `${c.box[a][0]}–${c.box[a][1] - 1}` : "not set");
    let n = 0;
    if (c.mask) for (let i = 0; i < c.mask.length; i++) n += c.mask[i];
    const lines = [
      ["volume", `${c.shape[2]} × ${c.shape[1]} × ${c.shape[0]} voxels (x × y × z)`],
      ["spacing", `x ${sp[2]} · y ${sp[1]} · z ${sp[0]} mm`],
      ["box", `x ${r("x")} · y ${r("y")} · z ${r("z")}` + (c.box.pending ? " (draw it in a second view)" : "")],
      ["mask", c.mask ? `${n} voxels = ${(n * voxel).toFixed(1)} mm³` : "none yet"],
      ["slices", `axial ${c.slices[0] + 1} · coronal ${c.slices[1] + 1} · sagittal ${c.slices[2] + 1}`],
    ];
    el.textContent = "";
    for (const [k, v] of lines) {
      const row = document.createElement("div"), b = document.createElement("b");
      b.textContent = k;
      row.appendChild(b);
      row.appendChild(document.createTextNode(v));
      el.appendChild(row);
    }
  }

  function setContrast() {
    $("#window").value = String(Math.round(S.win));
    $("#level").value = String(S.lev);
    const lo = S.lev - S.win / 2, lut = new Uint8ClampedArray(256);
    for (let g = 0; g < 256; g++) lut[g] = ((g - lo) / S.win) * 255;
    S.lut = lut;
    renderAll();
  }

  function renderLegend() {
    const root = $("#legend"), c = S.cur;
    root.textContent = "";
    const entry = (colour, text) => {
      const span = document.createElement("span"), sw = document.createElement("i");
      sw.style.background = colour;
      span.appendChild(sw);
      span.appendChild(document.createTextNode(text));
      root.appendChild(span);
    };
    entry(BOX_COLOUR, "box");
    if (c && c.mask) entry(`rgba(${MASK_RGB.join(",")},0.75)`, `mask (${c.method || "edited"})`);
    if (c && S.showVoters) {
      const names = Object.keys(c.voters);
      names.forEach((k, i) => entry(`rgb(${VOTER_RGB[i % VOTER_RGB.length].join(",")})`, `${k} (outline)`));
      if (!names.length) entry("transparent", "this method has no voters");
    }
    if (c && c.dims === 3) entry("rgba(0,200,255,0.6)", "the other views' slices");
  }

  // ------------------------------------------------------------------ changes
  function pushUndo(snap) {
    S.undo.push(snap);
    if (S.undo.length > 100) S.undo.shift();
  }

  function requestSegment(t0) {
    S.pending = { t0, box: boxToList(S.cur.box), id: S.cur.id };
    if (!S.segBusy) runSegments();
  }

  async function runSegments() {
    S.segBusy = true;
    document.body.dataset.busy = "1";
    while (S.pending) {
      const job = S.pending;
      S.pending = null;
      hint("segmenting…");
      try {
        const version = S.cur.id === job.id ? S.cur.version : S.items.find((i) => i.id === job.id).version;
        const { data } = await api("POST", `/api/items/${job.id}/segment`,
          { version, box: job.box, method: $("#method").value });
        if (S.cur.id === job.id) {
          applyDetail(data);
          if (!S.pending || S.pending.id !== job.id) {
            requestAnimationFrame(() => {
              const ms = performance.now() - job.t0;
              S.latencies.push(ms);
              S.shown += 1;
              document.body.dataset.shown = String(S.shown);
              document.body.dataset.lastLatency = ms.toFixed(0);
            });
          }
        }
      } catch (err) {
        fail(err);
        hint("");
      }
    }
    S.segBusy = false;
    document.body.dataset.busy = "0";
    refreshLists();
  }

  async function saveCurrent(opts) {
    const c = S.cur;
    const body = { version: c.version };
    if (opts.mask) body.mask = c.mask ? encodeRle(c.mask, c.shape) : null;
    if (opts.box) body.box = boxComplete(c.box) ? boxToList(c.box) : null;
    if (opts.state) body.state = opts.state;
    if (body.mask === null) delete body.mask;
    if (body.box === null) delete body.box;
    try {
      const { data } = await api("PUT", `/api/items/${c.id}`, body);
      if (S.cur.id === data.id) applyDetail(data);
      refreshLists();
      return data;
    } catch (err) {
      fail(err);
      return null;
    }
  }

  async function decide(state) {
    const c = S.cur;
    if (!c) return;
    if (!c.mask) { say("nothing to " + (state === "accepted" ? "accept" : "reject") + ": draw a box first", "info"); return; }
    pushUndo(snapshot());
    const list = currentList(), at = list.findIndex((it) => it.id === c.id);
    const done = await saveCurrent({ mask: true, state });
    if (!done) { S.undo.pop(); return; }
    await refreshLists();
    const after = currentList();
    let next = null;
    if (S.tab === "queue") next = after.length ? after[Math.min(Math.max(at, 0), after.length - 1)] : null;
    else if (at >= 0 && at + 1 < list.length) next = list[at + 1];
    if (next && next.id !== c.id) await openItem(next.id);
  }

  async function undo() {
    const snap = S.undo.pop();
    if (!snap) { say("nothing to undo", "info"); return; }
    if (!S.cur || S.cur.id !== snap.id) await openItem(snap.id);
    const c = S.cur;
    c.box = snap.box;
    c.mask = snap.mask;
    const state = snap.mask ? (snap.state === "todo" ? "proposed" : snap.state) : "todo";
    const body = { version: c.version, state };
    if (boxComplete(c.box) && !c.box.pending) body.box = boxToList(c.box);
    if (snap.mask) body.mask = encodeRle(snap.mask, c.shape);
    try {
      const { data } = await api("PUT", `/api/items/${c.id}`, body);
      applyDetail(data);
      refreshLists();
    } catch (err) {
      S.undo.push(snap);
      fail(err);
    }
  }

  // ------------------------------------------------------------------ lists
  function currentList() { return S.tab === "queue" ? S.queue : S.items; }

  async function refreshLists() {
    try {
      const [{ data: items }, { data: queue }] = await Promise.all([api("GET", "/api/items"), api("GET", "/api/queue")]);
      S.items = items;
      S.queue = queue;
      renderList();
    } catch (err) { fail(err); }
  }

  function qClass(q) { return q === null || q === undefined ? "" : q < 0.6 ? "low" : q < 0.8 ? "mid" : "high"; }

  function renderList() {
    const ul = $("#list"), list = currentList();
    ul.innerHTML = "";
    for (const it of list) {
      const li = document.createElement("li");
      li.dataset.id = String(it.id);
      li.dataset.state = it.state;
      if (S.cur && S.cur.id === it.id) li.className = "current";
      const q = it.quality === null || it.quality === undefined ? "—" : it.quality.toFixed(2);
      li.innerHTML = `<span class="name"></span><span class="badge ${it.state}">${stateText(it.state)}</span>` +
        `<span class="q ${qClass(it.quality)}">${q}</span>`;
      li.querySelector(".name").textContent = it.case_id;
      li.title = it.case_id;
      li.addEventListener("click", () => act(() => openItem(it.id)));
      ul.appendChild(li);
    }
    $("#count-all").textContent = String(S.items.length);
    $("#count-queue").textContent = String(S.queue.length);
    const cur = ul.querySelector("li.current");
    if (cur && cur.scrollIntoView) cur.scrollIntoView({ block: "nearest" });
  }

  function step(delta) {
    const list = currentList();
    if (!list.length) return;
    const at = S.cur ? list.findIndex((it) => it.id === S.cur.id) : -1;
    const to = at < 0 ? 0 : Math.min(list.length - 1, Math.max(0, at + delta));
    if (!S.cur || list[to].id !== S.cur.id) return openItem(list[to].id);
  }

  function setTab(tab) {
    S.tab = tab;
    $("#tab-all").classList.toggle("on", tab === "all");
    $("#tab-queue").classList.toggle("on", tab === "queue");
    renderList();
  }

  function setTool(tool) {
    S.tool = tool;
    document.querySelectorAll("#tools button").forEach((b) => b.classList.toggle("on", b.dataset.tool === tool));
    S.views.forEach((v) => v.el.classList.toggle("pan", tool === "pan"));
    renderAll();
  }

  // ------------------------------------------------------------------ batch and export
  async function segmentAll() {
    try {
      if (S.jobRunning) { await api("DELETE", "/api/segment-all"); return; }
      await api("POST", "/api/segment-all", { method: $("#method").value });
    } catch (err) { fail(err); return; }
    $("#progress").hidden = false;
    document.body.dataset.job = "running";
    pollJob();
  }

  async function pollJob() {
    let job;
    try { ({ data: job } = await api("GET", "/api/segment-all")); } catch (err) { fail(err); return; }
    $("#progress").max = Math.max(1, job.total);
    $("#progress").value = job.done;
    $("#progress-text").textContent = `${job.done}/${job.total}` + (job.errors.length ? `, ${job.errors.length} failed` : "");
    await refreshLists();
    if (S.cur) {
      const it = S.items.find((i) => i.id === S.cur.id);
      if (it && it.version !== S.cur.version && !S.segBusy) {
        await act(() => (S.cur.version !== it.version ? openItem(S.cur.id) : null));
      }
    }
    S.jobRunning = job.running;
    $("#segment-all").textContent = job.running ? "Stop" : "Segment every box";
    if (job.running) setTimeout(pollJob, 500);
    else {
      $("#progress-text").textContent = `segmented ${job.done - job.skipped}/${job.total}` +
        (job.errors.length ? `, ${job.errors.length} failed (${job.errors[0].case_id}: ${job.errors[0].error})` : "");
      document.body.dataset.job = "done";
    }
  }

  async function exportMasks() {
    const formats = [...document.querySelectorAll("#formats input:checked")].map((i) => i.value);
    try {
      const { data } = await api("POST", "/api/export", { formats });
      say(`exported ${data.accepted} accepted mask(s): ${data.written.join(", ")} in ${S.info.out}` +
        (data.errors.length ? ` (${data.errors.length} failed)` : ""), "info");
    } catch (err) { fail(err); }
  }

  // ------------------------------------------------------------------ keys
  function onKey(e) {
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "SELECT" || (tag === "INPUT" && e.target.type !== "range" && e.target.type !== "checkbox")) return;
    if (e.key === " ") { S.space = true; e.preventDefault(); return; }
    if (e.altKey || e.metaKey) return;
    const k = e.key.toLowerCase();
    if (e.ctrlKey && k !== "z") return;
    const acts = {
      n: () => act(() => step(1)), arrowdown: () => act(() => step(1)),
      p: () => act(() => step(-1)), arrowup: () => act(() => step(-1)),
      a: () => act(() => decide("accepted")), x: () => act(() => decide("rejected")), z: () => act(undo),
      b: () => setTool("box"), d: () => setTool("brush"), e: () => setTool("eraser"), h: () => setTool("pan"),
      v: () => { $("#voters").checked = !$("#voters").checked; toggleVoters(); },
      f: () => { S.views.forEach((v) => v.fit()); renderAll(); },
      s: () => { if (S.cur && boxComplete(S.cur.box)) requestSegment(performance.now()); },
      "[": () => setBrush(S.brush - 1), "]": () => setBrush(S.brush + 1),
    };
    if (acts[k]) { e.preventDefault(); Promise.resolve(acts[k]()).catch(fail); }
  }
  function setBrush(n) { S.brush = Math.min(40, Math.max(1, n)); $("#brush-size").value = String(S.brush); }
  function toggleVoters() { S.showVoters = $("#voters").checked; renderAll(); renderLegend(); }

  // ------------------------------------------------------------------ start
  async function start() {
    const { data: info } = await api("GET", "/api/info");
    S.info = info;
    const base = (p) => p.replace(/[\\/]+$/, "").split(/[\\/]/).pop();
    $("#data-name").textContent = `${base(info.data)} → ${base(info.out)}`;
    $("#data-name").title = `data: ${info.data}\noutput: ${info.out}`;
    const sel = $("#method");
    for (const m of info.methods) {
      const o = document.createElement("option");
      o.value = m; o.textContent = m; if (m === info.method) o.selected = true;
      sel.appendChild(o);
    }
    $("#formats").innerHTML = info.formats.map((f) =>
      `<label><input type="checkbox" value="${f}"${f === "png" || f === "nifti" && info.dims === 3 ? " checked" : ""}>${f}</label>`).join("");
    const notes = [];
    if (info.quality_note) notes.push(info.quality_note);
    if (info.unreadable.length) {
      const u = info.unreadable[0];
      notes.push(`${info.unreadable.length} image(s) could not be read, e.g. ${u.case_id}: ${u.error}`);
    }
    if (notes.length) say(notes.join("; "), "info");
    $("#tab-all").addEventListener("click", () => setTab("all"));
    $("#tab-queue").addEventListener("click", () => setTab("queue"));
    document.querySelectorAll("#tools button").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
    $("#brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
    $("#window").addEventListener("input", (e) => { S.win = Number(e.target.value); setContrast(); });
    $("#level").addEventListener("input", (e) => { S.lev = Number(e.target.value); setContrast(); });
    $("#fit").addEventListener("click", () => { S.views.forEach((v) => v.fit()); renderAll(); });
    $("#voters").addEventListener("change", toggleVoters);
    $("#accept").addEventListener("click", () => act(() => decide("accepted")));
    $("#reject").addEventListener("click", () => act(() => decide("rejected")));
    $("#undo").addEventListener("click", () => act(undo));
    $("#next").addEventListener("click", () => act(() => step(1)));
    $("#prev").addEventListener("click", () => act(() => step(-1)));
    $("#segment-all").addEventListener("click", segmentAll);
    $("#export").addEventListener("click", exportMasks);
    $("#reload").addEventListener("click", () => S.cur && act(() => openItem(S.cur.id)));
    $("#message-close").addEventListener("click", () => { $("#message").hidden = true; });
    document.addEventListener("keydown", onKey);
    document.addEventListener("keyup", (e) => {
      if (e.key !== " ") return;
      S.space = false;
      const tag = (e.target && e.target.tagName) || "";
      if (tag === "BUTTON") e.preventDefault();  // Space pans; it does not press the focused button
    });
    window.addEventListener("resize", () => { S.views.forEach((v) => v.fit()); renderAll(); });
    setContrast();
    await refreshLists();
    const job = (await api("GET", "/api/segment-all")).data;
    if (job.running) { $("#progress").hidden = false; pollJob(); }
    if (S.items.length) await openItem(S.items[0].id);
    document.body.dataset.ready = "1";
  }

  window.flipseg = {
    state: S,
    /** Where image pixel (u, v) of view k lies, in CSS pixels from the canvas's top-left. */
    imageToCanvas(k, u, v) { const p = S.views[k].toCanvas(u, v); return [p.x, p.y]; },
    openItem: (id) => act(() => openItem(id)),
    /** Show slices (z, y, x) in the three views of a volume. */
    setSlices(z, y, x) { S.cur.slices = [z, y, x]; renderAll(); },
  };
  start().catch(fail);
})();
