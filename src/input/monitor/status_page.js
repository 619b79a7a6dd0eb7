// weir's status page: reads the metrics a Prometheus scrape reads (the path is in <html
// data-metrics>) and each output's last error text (/status/errors.json), every REFRESH_MS,
// and shows them. Everything goes into the DOM as text (textContent), never as markup: error
// texts come from remote servers. No external file is loaded; the server's CSP forbids it.
"use strict";
(function () {
    var REFRESH_MS = 2000;
    var metricsPath = document.documentElement.getAttribute("data-metrics") || "/metrics";
    var prev = null; // {at: ms, events: {plugin_id: n}} of the last refresh, for events/s

    // The text exposition format 0.0.4: one sample per line, `name{a="x",b="y"} value`.
    var SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
    var LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;

    function unescapeLabel(v) {
        return v.replace(/\\(.)/g, function (_, c) { return c === "n" ? "\n" : c; });
    }

    function parseMetrics(text) {
        var samples = [];
        text.split("\n").forEach(function (line) {
            var m = SAMPLE.exec(line);
            if (!m || line.charAt(0) === "#") return;
            var labels = {}, l;
            LABEL.lastIndex = 0;
            while ((l = LABEL.exec(m[2] || ""))) labels[l[1]] = unescapeLabel(l[2]);
            samples.push({name: m[1], labels: labels, value: Number(m[3])});
        });
        return samples;
    }

    // {plugin_id: {type, m: {name: value summed over the plugin's series (tags)}}}
    function byPlugin(samples) {
        var plugins = {};
        samples.forEach(function (s) {
            var id = s.labels.plugin_id;
            if (id === undefined) return;
            var p = plugins[id] || (plugins[id] = {id: id, type: s.labels.type || "", m: {}});
            p.m[s.name] = (p.m[s.name] || 0) + s.value;
        });
        return plugins;
    }

    function global(samples, name) {
        for (var i = 0; i < samples.length; i++)
            if (samples[i].name === name && samples[i].labels.plugin_id === undefined)
                return samples[i];
        return null;
    }

    // ---- formatting ----

    function count(v) { return v === undefined || isNaN(v) ? "\u2013" : String(Math.round(v)); }

    function bytes(v) {
        if (v === undefined || isNaN(v)) return "\u2013";
        var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
        while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
        return i === 0 ? v + " B" : v.toFixed(1) + " " + units[i];
    }

    function duration(s) {
        if (s === undefined || isNaN(s)) return "\u2013";
        s = Math.max(0, Math.floor(s));
        if (s < 60) return s + " s";
        if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
        if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
        return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
    }

    function utc(t) { return new Date(t * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC"; }

    // A wall-clock time in seconds (0 = never), with its age by weir's clock.
    function when(t, now) {
        if (t === undefined || isNaN(t)) return "\u2013";
        if (t === 0) return "never";
        return utc(t) + " (" + duration(now - t) + " ago)";
    }

    // ---- DOM, as text only ----

    function el(tag, attrs, text) {
        var e = document.createElement(tag);
        Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
        if (text !== undefined) e.textContent = text;
        return e;
    }

    function setK(root, key, text) {
        var e = root.querySelector('[data-k="' + key + '"]');
        if (e) e.textContent = text;
    }

    function renderInputs(plugins, atMs) {
        var body = document.getElementById("inputs"), events = {};
        var rows = [];
        Object.keys(plugins).forEach(function (id) {
            var p = plugins[id], m = p.m;
            var isInput = "weir_input_connections" in m ||
                          "fluentd_input_status_num_records_total" in m;
            if (!isInput) return;
            var n = m.fluentd_input_status_num_records_total || 0;
            events[id] = n;
            var rate = "\u2013";
            if (prev && id in prev.events && atMs > prev.at)
                rate = ((n - prev.events[id]) / ((atMs - prev.at) / 1000)).toFixed(1);
            var tr = el("tr", {"data-plugin": id});
            tr.appendChild(el("td", {"data-k": "plugin_id"}, id));
            tr.appendChild(el("td", {"data-k": "type", "class": "text"}, p.type));
            tr.appendChild(el("td", {"data-k": "connections"}, count(m.weir_input_connections)));
            tr.appendChild(el("td", {"data-k": "events"}, count(n)));
            tr.appendChild(el("td", {"data-k": "rate"}, rate));
            tr.appendChild(el("td", {"data-k": "bytes"}, bytes(m.weir_input_bytes_total || 0)));
            rows.push(tr);
        });
        body.replaceChildren.apply(body, rows);
        return events;
    }

    var OUTPUT_FIELDS = [
        ["events in", "emitted"], ["delivered", "delivered"], ["staged", "staged"],
        ["queued", "queued"], ["buffered bytes", "buffer_bytes"],
        ["oldest chunk", "oldest_chunk"], ["last upload", "last_success"],
        ["retries", "retries"], ["backups", "backups"], ["failing for", "failing"],
        ["last error", "last_error_time"], ["", "last_error"],
    ];

    function renderOutputs(plugins, errors, now) {
        var box = document.getElementById("outputs"), cards = [];
        Object.keys(plugins).forEach(function (id) {
            var p = plugins[id], m = p.m;
            if (!("fluentd_output_status_emit_records" in m)) return;
            var card = el("div", {"class": "output", "data-plugin": id});
            var h = el("h3", {}, id + " ");
            h.appendChild(el("span", {}, p.type));
            card.appendChild(h);
            var dl = el("dl");
            OUTPUT_FIELDS.forEach(function (f) {
                dl.appendChild(el("dt", {}, f[0]));
                dl.appendChild(el("dd", {"data-k": f[1]}));
            });
            card.appendChild(dl);
            var buffered = "fluentd_output_status_buffer_total_bytes" in m;
            setK(card, "emitted", count(m.fluentd_output_status_emit_records));
            setK(card, "delivered", count(m.weir_output_delivered_records_total) + " events in " +
                 count(m.weir_output_delivered_chunks_total) + " chunks");
            setK(card, "staged", buffered ? count(m.fluentd_output_status_buffer_stage_length) +
                 " chunks, " + bytes(m.fluentd_output_status_buffer_stage_byte_size) : "no buffer");
            setK(card, "queued", buffered ? count(m.fluentd_output_status_buffer_queue_length) +
                 " chunks, " + bytes(m.fluentd_output_status_buffer_queue_byte_size) : "no buffer");
            setK(card, "buffer_bytes", bytes(m.fluentd_output_status_buffer_total_bytes));
            setK(card, "oldest_chunk", duration(m.weir_output_buffer_oldest_chunk_age_seconds));
            setK(card, "last_success", when(m.weir_output_last_success_timestamp_seconds, now));
            setK(card, "retries", count(m.fluentd_output_status_retry_count));
            setK(card, "backups", count(m.weir_output_backup_chunks_total));
            setK(card, "failing", duration(m.weir_output_failing_seconds));
            var errT = m.weir_output_last_error_timestamp_seconds;
            setK(card, "last_error_time", when(errT, now));
            var e = errors[id];
            var text = card.querySelector('[data-k="last_error"]');
            text.className = "errtext bad";
            text.textContent = e && e.last_error ? e.last_error : "";
            if (m.weir_output_buffer_full === 1) card.querySelector("h3 span").textContent +=
                " \u2013 buffer full: inputs have stopped reading";
            cards.push(card);
        });
        box.replaceChildren.apply(box, cards);
    }

    function renderProcess(samples, now) {
        var proc = document.getElementById("process");
        var start = global(samples, "process_start_time_seconds");
        var rss = global(samples, "process_resident_memory_bytes");
        var fds = global(samples, "process_open_fds"), max = global(samples, "process_max_fds");
        setK(proc, "uptime", start ? duration(now - start.value) : "\u2013");
        setK(proc, "rss", rss ? bytes(rss.value) : "\u2013");
        setK(proc, "fds", fds ? count(fds.value) + (max ? " of " + count(max.value) : "") : "\u2013");
        var build = samples.filter(function (s) { return s.name === "weir_build_info"; })[0];
        document.getElementById("version").textContent = build ? build.labels.version : "";
    }

    function get(path) {
        return fetch(path, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
            if (!r.ok) throw new Error(path + ": HTTP " + r.status);
            return r;
        });
    }

    function refresh() {
        var atMs = performance.now(), resp;
        Promise.all([
            get(metricsPath).then(function (r) { resp = r; return r.text(); }),
            get("/status/errors.json").then(function (r) { return r.json(); }),
        ]).then(function (got) {
            // weir's clock, from its Date header, so ages do not depend on the browser's clock
            var date = Date.parse(resp.headers.get("Date") || "");
            var now = (isNaN(date) ? Date.now() : date) / 1000;
            var samples = parseMetrics(got[0]), plugins = byPlugin(samples);
            renderProcess(samples, now);
            var events = renderInputs(plugins, atMs);
            renderOutputs(plugins, (got[1] && got[1].outputs) || {}, now);
            prev = {at: atMs, events: events};
            var state = document.getElementById("state");
            state.className = "ok";
            state.textContent = "updated " + utc(now);
        }).catch(function (err) {
            var state = document.getElementById("state");
            state.className = "stale";
            state.textContent = "cannot read weir (" + err.message + "); showing older numbers";
        }).then(function () {
            setTimeout(refresh, REFRESH_MS);
        });
    }

    document.getElementById("metrics-link").setAttribute("href", metricsPath);
    refresh();
})();
