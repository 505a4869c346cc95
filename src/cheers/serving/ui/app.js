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
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      if (line === "[DONE]") return;
      const event = JSON.parse(line);
      if (event.error) throw new Error(event.error.message);
      const choice = event.choices[0];
      if (choice.delta.content !== undefined && choice.delta.content !== null && !choice.delta.role) {
        onPiece(choice.delta.content);
      }
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

function setupChat() {
  const form = $("#chat-form");
  const log = $("#chat-log");
  let messages = [];
  const bubble = (role, text) => {
    const p = document.createElement("p");
    p.className = `message ${role}`;
    p.textContent = text;
    p.dataset.chunks = "0";
    log.append(p);
    return p;
  };
  $("#chat-reset").addEventListener("click", () => {
    messages = [];
    log.replaceChildren();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = form.elements.message.value;
    form.elements.message.value = "";
    messages.push({ role: "user", content: text });
    bubble("user", text);
    const reply = bubble("assistant", "");
    reply.classList.add("streaming");
    withProgress($("#chat"), async () => {
      const body = {
        messages,
        max_tokens: numberField(form, "max_tokens"),
        temperature: numberField(form, "temperature"),
        seed: numberField(form, "seed"),
      };
      try {
        await streamChat(body, (piece) => {
          reply.textContent += piece;
          reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
        });
        messages.push({ role: "assistant", content: reply.textContent });
      } catch (err) {
        messages.pop(); // the turn failed: it is not part of the conversation
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
