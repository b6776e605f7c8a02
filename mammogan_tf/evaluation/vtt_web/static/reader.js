// Reader page of the visual Turing test. Talks only to api/state, api/answer and img/<id>
// relative to the reader's link; it never learns whether an image is real or synthetic.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const image = $("image"), viewer = $("viewer"), message = $("message");
  let state = null, choice = null, confidence = null, lesion = null;
  let shownAt = 0, timer = null, busy = false, zoom = 1, fitZoom = 1;

  function say(text) { message.textContent = text; }

  function applyView() {
    image.style.filter = `brightness(${$("level").value}) contrast(${$("window").value})`;
    if (image.naturalWidth) {
      image.style.width = `${image.naturalWidth * zoom}px`;
      image.style.height = `${image.naturalHeight * zoom}px`;
    }
    $("zoom-text").textContent = `${zoom}x`;
  }

  function resetView() {
    $("level").value = 1; $("window").value = 1;
    const w = image.naturalWidth || 1, h = image.naturalHeight || 1;
    // full resolution: never shrink; small patches are enlarged by a whole factor (pixelated)
    fitZoom = Math.max(1, Math.floor(Math.min(viewer.clientWidth / w, viewer.clientHeight / h)));
    zoom = fitZoom;
    applyView();
  }

  function buttons(box, values, onPick) {
    box.replaceChildren(...values.map((v) => {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = v; b.dataset.value = v;
      b.addEventListener("click", () => onPick(v));
      return b;
    }));
  }

  function mark(box, value) {
    for (const b of box.children) b.classList.toggle("chosen", b.dataset.value === String(value));
  }

  function needsMore() { return state && (state.settings.confidence || state.settings.lesion_types.length > 0); }

  function complete() {
    const s = state.settings;
    return choice !== null && (!s.confidence || confidence !== null) && (!s.lesion_types.length || lesion !== null);
  }

  function choose(answer) {
    choice = answer;
    for (const b of document.querySelectorAll(".answer button")) b.classList.toggle("chosen", b.dataset.answer === answer);
    if (!needsMore()) submit();
    else say(complete() ? "press Enter to submit" : "");
  }

  function startTimer(limit) {
    clearInterval(timer);
    $("timer").hidden = !limit;
    if (!limit) return;
    timer = setInterval(() => {
      const left = limit - (performance.now() - shownAt) / 1000;
      if (left <= 0) {
        clearInterval(timer);
        image.style.visibility = "hidden";
        $("timer").textContent = "time is up: answer now";
      } else {
        $("timer").textContent = `${Math.ceil(left)} s left`;
      }
    }, 200);
  }

  function show(next) {
    state = next;
    choice = confidence = lesion = null;
    for (const b of document.querySelectorAll("button.chosen")) b.classList.remove("chosen");
    $("progress-text").textContent = `${state.done} of ${state.total} answered`;
    $("progress").max = state.total; $("progress").value = state.done;
    $("confidence-box").hidden = !state.settings.confidence;
    $("lesion-box").hidden = !state.settings.lesion_types.length;
    $("submit").hidden = !needsMore();
    buttons($("confidence"), ["1", "2", "3", "4", "5"], pickConfidence);
    buttons($("lesion"), state.settings.lesion_types, pickLesion);
    if (state.next === null) {
      clearInterval(timer);
      document.querySelector("main").classList.add("finished");
      $("done").hidden = false;
      return;
    }
    image.style.visibility = "hidden";
    image.onload = () => {
      resetView();
      image.style.visibility = "visible";
      shownAt = performance.now();
      startTimer(state.settings.time_limit_s);
    };
    image.src = `img/${encodeURIComponent(state.next)}`;
  }

  function pickConfidence(v) { confidence = Number(v); mark($("confidence"), v); say(complete() ? "press Enter to submit" : ""); }
  function pickLesion(v) { lesion = v; mark($("lesion"), v); say(complete() ? "press Enter to submit" : ""); }

  async function load() {
    try {
      const response = await fetch("api/state", { cache: "no-store" });
      if (!response.ok) throw new Error(`server answered ${response.status}`);
      show(await response.json());
      say("");
    } catch (error) { say(`could not load the study (${error.message}); reload the page`); }
  }

  async function submit() {
    if (busy || !state || state.next === null) return;
    if (!complete()) { say("choose real or synthetic" + (state.settings.confidence ? ", a confidence" : "") + (state.settings.lesion_types.length ? " and a lesion type" : "")); return; }
    busy = true;
    const body = { image: state.next, answer: choice, response_ms: Math.round(performance.now() - shownAt) };
    if (state.settings.confidence) body.confidence = confidence;
    if (state.settings.lesion_types.length) body.lesion_type = lesion;
    try {
      const response = await fetch("api/answer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (response.status === 409) { say("already answered"); await load(); return; }
      if (!response.ok) throw new Error(`server answered ${response.status}`);
      show(await response.json());
      say("saved");
    } catch (error) {
      say(`not saved (${error.message}); press the answer again`);
    } finally { busy = false; }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const step = { ArrowUp: ["level", 0.05], ArrowDown: ["level", -0.05], ArrowRight: ["window", 0.1], ArrowLeft: ["window", -0.1] }[key];
    if (step) { $(step[0]).value = Number($(step[0]).value) + step[1]; applyView(); event.preventDefault(); return; }
    if (key === "r" || key === "R") choose("real");
    else if (key === "s" || key === "S") choose("synthetic");
    else if (/^[1-5]$/.test(key) && state && state.settings.confidence) pickConfidence(key);
    else if ((key === "l" || key === "L") && state && state.settings.lesion_types.length) {
      const types = state.settings.lesion_types;
      pickLesion(types[(types.indexOf(lesion) + 1) % types.length]);
    } else if (key === "Enter") submit();
    else if (key === "+" || key === "=") { zoom = Math.min(zoom * 2, 64); applyView(); }
    else if (key === "-") { zoom = Math.max(zoom / 2, 0.125); applyView(); }
    else if (key === "0") { zoom = fitZoom; $("level").value = 1; $("window").value = 1; applyView(); }
    else return;
    event.preventDefault();
  });
  for (const b of document.querySelectorAll(".answer button")) b.addEventListener("click", () => choose(b.dataset.answer));
  $("submit").addEventListener("click", submit);
  $("level").addEventListener("input", applyView);
  $("window").addEventListener("input", applyView);
  load();
})();
