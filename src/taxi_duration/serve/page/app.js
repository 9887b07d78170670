// The trip estimator: zones by name from /zones, the ride to /predict, the model card from /model, counters from
// /stats. Plain JavaScript, nothing loaded from outside this server.
"use strict";

const zonesByLabel = new Map();

function zoneLabel(zone) {
  return `${zone.zone}, ${zone.borough} (#${zone.id})`;
}

function newYorkNow() {
  // "YYYY-MM-DDTHH:MM" of the current New York wall clock, for a datetime-local input
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: "America/New_York", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).formatToParts(new Date()).map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

function zoneId(input) {
  const text = input.value.trim();
  if (zonesByLabel.has(text)) return zonesByLabel.get(text);
  const match = text.match(/#(\d+)\)?$/) || text.match(/^(\d+)$/);
  return match ? Number(match[1]) : null;
}

function setList(element, rows) {
  element.replaceChildren();
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    element.append(dt, dd);
  }
}

function number(value, digits) {
  return typeof value === "number" ? value.toLocaleString("en-US", { maximumFractionDigits: digits }) : "–";
}

async function loadZones() {
  const response = await fetch("/zones");
  const zones = await response.json();
  const list = document.getElementById("zone-list");
  for (const zone of zones) {
    const label = zoneLabel(zone);
    zonesByLabel.set(label, zone.id);
    const option = document.createElement("option");
    option.value = label;
    list.append(option);
  }
}

async function loadModel() {
  const card = document.getElementById("model-card");
  const response = await fetch("/model");
  if (!response.ok) {
    setList(card, [["Status", "no model loaded"]]);
    return;
  }
  const model = await response.json();
  const rows = [
    ["Name", model.model_name],
    ["Version", model.model_version],
    ["Kind", model.kind],
    ["Trained", model.exported_at ? new Date(model.exported_at).toLocaleString("en-US") : "–"],
  ];
  for (const [name, value] of Object.entries(model.metrics || {})) {
    if (typeof value === "number") rows.push([name, number(value, 3)]);
  }
  if (model.shadow) rows.push(["Shadow", `${model.shadow.model_name} v${model.shadow.model_version}`]);
  setList(card, rows);
}

async function loadStats() {
  const response = await fetch("/stats");
  if (!response.ok) return;
  const stats = await response.json();
  const rows = [
    ["Requests", number(stats.requests, 0)],
    ["Rides predicted", number(stats.predicted_rides, 0)],
    ["Serving since", new Date(stats.started_at).toLocaleString("en-US")],
  ];
  if (stats.shadow) {
    rows.push(["Shadow rides", number(stats.shadow.rides, 0)]);
    rows.push(["Shadow mean |Δ|", `${number(stats.shadow.mean_abs_diff_minutes, 2)} min`]);
  }
  if (stats.request_log_rows !== undefined && stats.request_log_rows !== null) {
    rows.push(["Logged rides", number(stats.request_log_rows, 0)]);
  }
  setList(document.getElementById("counters"), rows);
}

async function estimate(event) {
  event.preventDefault();
  const error = document.getElementById("form-error");
  const answer = document.getElementById("answer");
  error.hidden = true;
  const pickup = zoneId(document.getElementById("pickup"));
  const dropoff = zoneId(document.getElementById("dropoff"));
  const missing = [];
  if (pickup === null) missing.push("pickup zone");
  if (dropoff === null) missing.push("dropoff zone");
  if (missing.length) {
    error.textContent = `Choose a ${missing.join(" and a ")} from the list.`;
    error.hidden = false;
    return;
  }
  const ride = { PULocationID: pickup, DOLocationID: dropoff };
  const when = document.getElementById("when").value;
  if (when) ride.pickup_datetime = when.length === 16 ? `${when}:00` : when;
  const distance = document.getElementById("distance").value;
  if (distance !== "") ride.trip_distance = Number(distance);
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(ride),
    });
    const body = await response.json();
    if (!response.ok) {
      error.textContent = body.detail || `The server answered ${response.status}.`;
      error.hidden = false;
      answer.hidden = true;
      return;
    }
    document.getElementById("minutes").textContent = body.duration_minutes.toFixed(1);
    const how = {
      recorded_distance: "regime recorded_distance: with the distance you gave",
      zones_only: "regime zones_only: distance estimated from the zone pair",
      coordinates_only: "regime coordinates_only: zones from the coordinates",
    }[body.regime] || `regime ${body.regime}`;
    document.getElementById("answer-detail").textContent =
      `${how} · model ${body.model_name} v${body.model_version}`;
    answer.dataset.minutes = String(body.duration_minutes);
    answer.dataset.regime = body.regime;
    answer.hidden = false;
  } catch (exc) {
    error.textContent = `No answer from the server (${exc}).`;
    error.hidden = false;
  } finally {
    button.disabled = false;
    loadStats();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("when").value = newYorkNow();
  document.getElementById("ride-form").addEventListener("submit", estimate);
  Promise.all([loadZones(), loadModel(), loadStats()]).then(() => {
    document.body.dataset.ready = "true";
  });
  setInterval(loadStats, 5000);
});
