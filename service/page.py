"""The results page at ``/``: a question box and a filter; results grouped by video as
thumbnails with time ranges and scores; a click plays the clip's segment and shows the
clips next to it.

The page itself holds no data, so it needs no key: it asks for one and sends it as a Bearer
token on every API call (kept in the tab's sessionStorage only). Thumbnails and segments
are fetched with the key too and shown through blob URLs, so no key ever goes into a URL.
"""

from __future__ import annotations

# what the page may load: its own inline script and style, and blobs it made
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src blob:; media-src blob:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>VMem memory search</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem auto; max-width: 70rem;
         padding: 0 1rem; color: #1d1d1f; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; margin-bottom: 1rem; }
  input { padding: .45rem .6rem; border: 1px solid #bbb; border-radius: 6px; }
  #question { flex: 3 1 20rem; } #where { flex: 2 1 12rem; } #key { flex: 1 1 12rem; }
  button { padding: .45rem 1rem; border: 0; border-radius: 6px; background: #0b57d0;
           color: #fff; cursor: pointer; }
  #status { color: #555; min-height: 1.4em; } #status.error { color: #b3261e; }
  #answer { font-size: 1.15rem; margin: .5rem 0 1rem; }
  .video { border-top: 1px solid #ddd; padding: .75rem 0; }
  .video h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .clips { display: flex; gap: .6rem; flex-wrap: wrap; }
  figure { margin: 0; width: 160px; cursor: pointer; }
  figure img { width: 160px; height: 120px; object-fit: cover; background: #eee;
               border-radius: 4px; display: block; }
  figure.neighbour { opacity: .7; cursor: default; }
  figcaption { font-size: .8rem; color: #444; }
  #player { margin-top: 1rem; } #player video { max-width: 100%; max-height: 60vh; }
</style>
</head>
<body>
<h1>VMem memory search</h1>
<form id="login">
  <input id="key" type="password" placeholder="API key (vmem keys create)" autocomplete="off">
  <button id="use-key" type="submit">Use key</button>
</form>
<form id="search">
  <input id="question" placeholder="Ask the archive a question" required>
  <input id="where" placeholder="optional filter, e.g. t_start > 60">
  <button id="ask" type="submit">Search</button>
</form>
<div id="status"></div>
<div id="answer"></div>
<div id="results"></div>
<div id="player"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const key = () => sessionStorage.getItem("vmem-key") || "";
const clock = (s) => Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function call(path, options) {
  const headers = Object.assign({"Authorization": "Bearer " + key()}, (options || {}).headers);
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) {}
    throw new Error(message);
  }
  return response;
}

async function blobUrl(path) {
  return URL.createObjectURL(await (await call(path)).blob());
}

function figure(clip, cls) {
  const fig = document.createElement("figure");
  fig.className = cls || "clip";
  const img = document.createElement("img");
  img.alt = "clip " + clip.clip_index;
  blobUrl(clip.thumbnail_url).then((url) => { img.src = url; img.dataset.loaded = "1"; },
                                   () => { img.alt = "no thumbnail"; });
  const cap = document.createElement("figcaption");
  cap.textContent = clock(clip.t_start) + "-" + clock(clip.t_end) +
    (clip.score === undefined ? "" : " · " + clip.score.toFixed(3));
  fig.append(img, cap);
  return fig;
}

async function play(video, clip) {
  const box = $("player");
  box.replaceChildren();
  const title = document.createElement("h2");
  title.textContent = video.name + " " + clock(clip.t_start) + "-" + clock(clip.t_end);
  box.append(title);
  try {
    const player = document.createElement("video");
    player.id = "segment";
    player.controls = true;
    player.muted = true;
    player.src = await blobUrl(clip.segment_url);
    box.append(player);
    player.play().catch(() => {});
  } catch (e) { say("cannot play the segment: " + e.message, true); }
  const around = document.createElement("div");
  around.className = "clips";
  around.id = "neighbours";
  for (const index of [clip.clip_index - 1, clip.clip_index + 1]) {
    if (index < 0) continue;
    const base = "/v1/clips/" + encodeURIComponent(video.video_id) + "/" + index;
    const span = clip.t_end - clip.t_start;
    const shift = (index - clip.clip_index) * span;
    around.append(figure({clip_index: index, t_start: clip.t_start + shift,
                          t_end: clip.t_end + shift, thumbnail_url: base + "/thumbnail.jpg"},
                         "neighbour"));
  }
  box.append(around);
}

function show(result) {
  $("answer").textContent = result.answer ? "Answer: " + result.answer : "";
  const list = $("results");
  list.replaceChildren();
  for (const video of result.videos) {
    const section = document.createElement("section");
    section.className = "video";
    section.dataset.video = video.video_id;
    const head = document.createElement("h2");
    head.textContent = video.name + " (best " + video.score.toFixed(3) + ")";
    const clips = document.createElement("div");
    clips.className = "clips";
    for (const clip of video.clips) {
      const fig = figure(clip);
      fig.addEventListener("click", () => play(video, clip));
      clips.append(fig);
    }
    section.append(head, clips);
    list.append(section);
  }
  say(result.videos.length ? result.videos.length + " videos" : "no memory matches", false);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("vmem-key", $("key").value.trim());
  $("key").value = "";
  say("key set for this tab", false);
});

$("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!key()) { say("enter an API key first", true); return; }
  say("searching...", false);
  const body = {question: $("question").value, answer: true};
  if ($("where").value.trim()) body.where = $("where").value.trim();
  const post = (payload) => call("/v1/search", {method: "POST", body: JSON.stringify(payload),
                                  headers: {"Content-Type": "application/json"}});
  try {
    let response = await post(body);
    if (response.status === 400) throw new Error("bad request");
    show(await response.json());
  } catch (e) {
    if (/answer/.test(e.message)) {  // a model without an answerer: selection only
      try { body.answer = false; show(await (await post(body)).json()); return; }
      catch (e2) { say(e2.message, true); return; }
    }
    say(e.message, true);
  }
});
</script>
</body>
</html>
"""
