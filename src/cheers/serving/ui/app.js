// The Cheers web UI: plain JS over the same OpenAI-shaped API any client uses.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);

let modelName = "cheers";

// ----------------------------------------------------------------------------- API calls
async function apiError(response) {
  try {
    const body = await response.json();
    return new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  } catch {
    return new Error(`HTTP ${response.status}`);
  }
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await apiError(response);
  return response.json();
}

async function postForm(path, form) {
  const response = await fetch(path, { method: "POST", body: form });
  if (!response.ok) throw await apiError(response);
  return response.json();
}

// POST a streamed chat completion; onPiece(text) is called once per token.
async function streamChat(body, onPiece) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, model: modelName, stream: true }),
  });
  if (!response.ok) throw await apiError(response);
  await forEachServerEvent(response, (data) => {
    if (data === "[DONE]") return false;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message);
    const choice = event.choices[0];
    if (choice.delta.content !== undefined && choice.delta.content !== null && !choice.delta.role) {
      onPiece(choice.delta.content);
    }
    return true;
  });
}

// Read a server-sent event stream: onData(text) gets each event's data line; false stops.
async function forEachServerEvent(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").find((line) => line.startsWith("data: "));
      if (data && onData(data.slice(6)) === false) return;
    }
  }
}

// ------------------------------------------------------------------------------ helpers
function numberField(form, name) {
  const value = form.elements[name].value;
  return value === "" ? undefined : Number(value);
}

function fileAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function showImages(container, data) {
  container.replaceChildren(
    ...data.map((item, i) => {
      const img = document.createElement("img");
      img.src = `data:image/png;base64,${item.b64_json}`;
      img.alt = `image ${i + 1}`;
      return img;
    }),
  );
}

// Runs task() with the panel's progress indicator (elapsed time and the server's queue).
async function withProgress(panel, task) {
  const progress = $(".progress", panel);
  const text = $(".progress-text", panel);
  const error = $(".error", panel);
  const button = $("button[type=submit]", panel);
  error.hidden = true;
  if (progress) progress.hidden = false;
  button.disabled = true;
  const started = performance.now();
  const timer = setInterval(async () => {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    try {
      const health = await (await fetch("/health")).json();
      text.textContent = `${seconds} s · running ${health.running}, queued ${health.queued}`;
    } catch {
      text.textContent = `${seconds} s`;
    }
  }, 250);
  try {
    await task();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  } finally {
    clearInterval(timer);
    if (progress) progress.hidden = true;
    button.disabled = false;
  }
}

function previewOnChange(form) {
  const input = form.elements.image;
  const preview = $(".preview", form);
  input.addEventListener("change", () => {
    if (input.files.length) {
      preview.src = URL.createObjectURL(input.files[0]);
      preview.hidden = false;
    }
  });
}

// ------------------------------------------------------------------------------- panels
function setupTabs() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
      for (const p of document.querySelectorAll(".panel")) {
        p.classList.toggle("active", p.id === tab.dataset.tab);
      }
    });
  }
}

function setupGenerate() {
  const form = $("#generate-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    withProgress($("#generate"), async () => {
      const result = await postJSON("/v1/images/generations", {
        model: modelName,
        prompt: form.elements.prompt.value,
        n: numberField(form, "n"),
        seed: numberField(form, "seed"),
        num_inference_steps: numberField(form, "num_inference_steps"),
        guidance_scale: numberField(form, "guidance_scale"),
        response_format: "b64_json",
      });
      showImages($("#generate-images"), result.data);
    });
  });
}

function setupAsk() {
  const form = $("#ask-form");
  previewOnChange(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const answer = $("#ask-answer");
    withProgress($("#ask"), async () => {
      answer.textContent = "";
      answer.dataset.chunks = "0";
      const url = await fileAsDataURL(form.elements.image.files[0]);
      const content = [
        { type: "image_url", image_url: { url } },
        { type: "text", text: form.elements.question.value },
      ];
      await streamChat({ messages: [{ role: "user", content }] }, (piece) => {
        answer.textContent += piece;
        answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
      });
    });
  });
}

function setupEdit() {
  const form = $("#edit-form");
  previewOnChange(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    withProgress($("#edit"), async () => {
      const body = new FormData();
      body.append("image", form.elements.image.files[0]);
      body.append("model", modelName);
      body.append("prompt", form.elements.prompt.value);
      for (const name of ["n", "seed", "num_inference_steps", "guidance_scale", "strength"]) {
        if (form.elements[name].value !== "") body.append(name, form.elements[name].value);
      }
      const result = await postForm("/v1/images/edits", body);
      showImages($("#edit-images"), result.data);
    });
  });
}

// A key of this page: the server keeps each conversation private to the key that made it.
const pageKey = `ui-${crypto.getRandomValues(new Uint32Array(4)).join("")}`;

// POST a streamed response (/v1/responses); onEvent(event) gets every server-sent event.
async function streamResponse(body, onEvent) {
  const response = await fetch("/v1/responses", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${pageKey}` },
    body: JSON.stringify({ ...body, model: modelName, stream: true }),
  });
  if (!response.ok) throw await apiError(response);
  await forEachServerEvent(response, (data) => {
    const event = JSON.parse(data);
    if (event.type === "error") throw new Error(event.message);
    onEvent(event);
    return true;
  });
}

// The conversation: one thread of text and images; each turn continues the previous response.
function setupChat() {
  const panel = $("#chat");
  const form = $("#chat-form");
  const log = $("#chat-log");
  let previous = null;
  let mode = "send";
  const bubble = (role) => {
    const div = document.createElement("div");
    div.className = `message ${role}`;
    div.dataset.chunks = "0";
    const text = document.createElement("p");
    text.className = "text";
    div.append(text);
    log.append(div);
    return div;
  };
  const addImage = (div, src, alt) => {
    const img = document.createElement("img");
    img.src = src;
    img.alt = alt;
    div.append(img);
  };
  for (const button of form.querySelectorAll("button[data-mode]")) {
    button.addEventListener("click", () => { mode = button.dataset.mode; });
  }
  $("#chat-reset").addEventListener("click", () => {
    previous = null;
    log.replaceChildren();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const turnMode = (event.submitter && event.submitter.dataset.mode) || mode;
    const text = form.elements.message.value;
    const file = form.elements.image.files[0];
    withProgress(panel, async () => {
      const content = [];
      const mine = bubble("user");
      if (file) {
        const url = await fileAsDataURL(file);
        content.push({ type: "input_image", image_url: url });
        addImage(mine, url, "attached image");
      }
      content.push({ type: "input_text", text });
      $(".text", mine).textContent = text;
      form.elements.message.value = "";
      form.elements.image.value = "";
      const tool = { type: "image_generation", num_inference_steps: numberField(form, "num_inference_steps") };
      if (turnMode === "edit") tool.action = "edit";
      const body = {
        input: [{ role: "user", content }],
        previous_response_id: previous,
        tools: [tool],
        tool_choice: turnMode === "send" ? "auto" : { type: "image_generation" },
        max_output_tokens: numberField(form, "max_tokens"),
        temperature: numberField(form, "temperature"),
        seed: numberField(form, "seed"),
      };
      const reply = bubble("assistant");
      reply.classList.add("streaming");
      try {
        await streamResponse(body, (e) => {
          if (e.type === "response.output_text.delta") {
            $(".text", reply).textContent += e.delta;
            reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
          } else if (e.type === "response.image_generation_call.generating") {
            let step = $(".step", reply);
            if (!step) {
              step = document.createElement("span");
              step.className = "step muted";
              reply.append(step);
            }
            step.textContent = `drawing: step ${e.step} of ${e.total}`;
            reply.dataset.steps = String(e.step);
          } else if (e.type === "response.output_item.done" && e.item.type === "image_generation_call") {
            const step = $(".step", reply);
            if (step) step.remove();
            addImage(reply, `data:image/png;base64,${e.item.result}`, `${e.item.action}ed image`);
          } else if (e.type === "response.completed") {
            previous = e.response.id; // the next turn continues this conversation
          }
        });
      } catch (err) {
        mine.remove(); // the turn failed: the conversation is as it was
        reply.remove();
        throw err;
      } finally {
        reply.classList.remove("streaming");
        reply.classList.add("done");
      }
    });
  });
}

async function setupStatus() {
  const status = $("#status");
  try {
    const models = await (await fetch("/v1/models")).json();
    modelName = models.data[0].id;
    const health = await (await fetch("/health")).json();
    status.textContent = `model ${modelName} · ${health.image_size}×${health.image_size} images`;
    document.body.dataset.ready = "true";
  } catch (err) {
    status.textContent = `server unreachable (${err.message})`;
  }
}

setupTabs();
setupGenerate();
setupAsk();
setupEdit();
setupChat();
setupStatus();
