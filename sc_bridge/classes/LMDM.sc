// LMDM: a client for the lmdm_live instrument's OSC address space (/lmdm/...).
// One method per control; each sends one OSC message (or, with a latency, a timestamped bundle that the
// instrument plays at that time). Replies (/lmdm/status, /lmdm/error) come back to sclang's own port.

LMDM {
	classvar <floatKeys, <intKeys;

	var <addr, <>defaultLatency, <>errorAction, <>postErrors = true, <>statusTimeout = 2;
	var <lastError, <lastStatus, <>matchSource = true;
	var errorFunc, collecting;

	*initClass {
		// /lmdm/play values the instrument reads as numbers: send them with the OSC type it expects
		floatKeys = [\cfg, \cfg_pp, \gain, \cps, \cycle, \delta, \bpm];
		intKeys = [\steps, \seed, \orbit];
	}

	*new { |host = "127.0.0.1", port = 57140, latency|
		^super.new.init(host, port, latency)
	}

	init { |host, port, latency|
		addr = NetAddr(host, port);
		defaultLatency = latency;
		errorFunc = OSCFunc({ |msg, time, from|
			if(this.prFromServer(from)) { this.prError(msg) };
		}, '/lmdm/error').fix;
	}

	free {
		errorFunc.free;
		errorFunc = nil;
	}

	printOn { |stream|
		stream << this.class.name << "(\"" << addr.ip << "\", " << addr.port << ")";
	}

	// --- prompts ----------------------------------------------------------------------------------------

	prompt { |text, at, latency|
		^this.prSend('/lmdm/prompt', [this.prText(text)], at, latency)
	}

	// pairs: [text, weight, text, weight, ...] or a Dictionary/Event of text -> weight
	prompts { |pairs, at, latency|
		var flat = if(pairs.isKindOf(Dictionary)) { pairs.asPairs } { pairs.asArray };
		flat = flat.collect { |x, i| if(i.even) { this.prText(x) } { this.prFloat(x) } };
		^this.prSend('/lmdm/prompts', flat, at, latency)
	}

	// --- sampler ----------------------------------------------------------------------------------------

	cfg { |scale, at, latency| ^this.prSend('/lmdm/cfg', [this.prFloat(scale)], at, latency) }

	// lambda, or \off for plain CFG
	cfgpp { |lambda, at, latency|
		var v = if(lambda.isKindOf(Symbol)) { lambda.asString } { this.prFloat(lambda) };
		^this.prSend('/lmdm/cfg_pp', [v], at, latency)
	}

	steps { |n, at, latency| ^this.prSend('/lmdm/steps', [this.prInt(n)], at, latency) }

	// guidance on the tempo channels (0 = off): how hard the model is held to inst.bpm
	tempoGuidance { |weight, at, latency|
		^this.prSend('/lmdm/tempo_guidance', [this.prFloat(weight)], at, latency)
	}

	// guidance on a hummed sketch (0 = off): how hard the music is held to the sketch's melody
	sketchGuidance { |weight, at, latency|
		^this.prSend('/lmdm/sketch_guidance', [this.prFloat(weight)], at, latency)
	}

	sampler { |name, at, latency| ^this.prSend('/lmdm/sampler', [this.prText(name)], at, latency) }

	seed { |n, at, latency| ^this.prSend('/lmdm/seed', [this.prInt(n)], at, latency) }

	// forget the oldest frames of context (all of them when frames is nil)
	drop { |frames, at, latency|
		^this.prSend('/lmdm/drop', if(frames.isNil) { [] } { [this.prInt(frames)] }, at, latency)
	}

	// --- level ------------------------------------------------------------------------------------------

	gain { |value, at, latency| ^this.prSend('/lmdm/gain', [this.prFloat(value)], at, latency) }

	mute { |at, latency| ^this.prSend('/lmdm/mute', [], at, latency) }

	unmute { |at, latency| ^this.prSend('/lmdm/unmute', [], at, latency) }

	hush { |latency| ^this.prSend('/lmdm/hush', [], nil, latency) }

	reset { |at, latency| ^this.prSend('/lmdm/reset', [], at, latency) }

	// --- tempo, patches, recording ----------------------------------------------------------------------

	bpm { |value, latency| ^this.prSend('/lmdm/bpm', [this.prFloat(value)], nil, latency) }

	patch { |nameOrPath, latency| ^this.prSend('/lmdm/patch', [this.prText(nameOrPath)], nil, latency) }

	record { |path, latency| ^this.prSend('/lmdm/record', [this.prText(path)], nil, latency) }

	recordStop { |latency| ^this.prSend('/lmdm/record/stop', [], nil, latency) }

	// Tidal-style key/value pairs: [\prompt, "acid", \cfg, 3] or (prompt: "acid", cfg: 3)
	play { |pairs, latency|
		var flat = if(pairs.isKindOf(Dictionary)) { pairs.asPairs } { pairs.asArray };
		flat = flat.clump(2).collect { |kv|
			var key = kv[0].asSymbol, value = kv[1];
			value = case
				{ floatKeys.includes(key) } { this.prFloat(value) }
				{ intKeys.includes(key) } { this.prInt(value) }
				{ value.isKindOf(Symbol) } { value.asString }
				{ value };
			[key.asString] ++ (if(kv.size > 1) { [value] } { [] })
		}.flatten;
		^this.prSend('/lmdm/play', flat, nil, latency)
	}

	// Send every message the function sends as one bundle, heard together `latency` seconds from now:
	//   l.bundle(0.5) { |l| l.prompt("acid"); l.cfg(4) }
	bundle { |latency, func|
		var msgs;
		collecting = List.new;
		protect { func.value(this) } { msgs = collecting; collecting = nil };
		if(msgs.notEmpty) { addr.sendBundle(latency ? defaultLatency, *msgs.asArray) };
	}

	// --- replies ----------------------------------------------------------------------------------------

	// Ask for the instrument's figures; `action` gets an Event (prompt, cfg, steps, gain, bpm, x_realtime,
	// underruns, faults, latency_ms, ring_ms, blocks, ...). Without a reply within `timeout` seconds a
	// warning is posted and `action` is not called.
	status { |action, timeout|
		var resp, answered = false;
		resp = OSCFunc({ |msg, time, from|
			if(answered.not and: { this.prFromServer(from) }) {
				answered = true;
				resp.free;
				lastStatus = this.prEvent(msg);
				action.value(lastStatus, this);
			};
		}, '/lmdm/status');
		addr.sendMsg('/lmdm/status');
		timeout = timeout ? statusTimeout;
		if(timeout.notNil) {
			SystemClock.sched(timeout, {
				if(answered.not) {
					answered = true;
					resp.free;
					"LMDM: no /lmdm/status reply from %:% within % s".format(addr.ip, addr.port, timeout).warn;
				};
				nil
			});
		};
	}

	// --- private ----------------------------------------------------------------------------------------

	prSend { |path, args, at, latency|
		var msg;
		if(args.includes(nil)) {
			// nothing sensible to send: say so here, the way the instrument would
			this.prError([nil, path, "a value is missing (got nil)"]);
			^this
		};
		msg = [path] ++ args ++ this.prAt(at);
		if(collecting.notNil) { collecting.add(msg); ^this };
		latency = latency ? defaultLatency;
		if(latency.isNil) { addr.sendMsg(*msg) } { addr.sendBundle(latency, msg) };
	}

	// \beat -> ["@beat"]; nil or \now -> []; anything else is sent as given so the instrument answers
	// with an /lmdm/error saying what it accepts
	prAt { |at|
		if(at.isNil or: { at == \now or: { at == "now" } }) { ^[] };
		^["@" ++ at.asString]
	}

	prFloat { |x| ^if(x.isNumber) { x.asFloat } { x } }

	prText { |x| ^if(x.isKindOf(Symbol)) { x.asString } { x } }

	prInt { |x| ^if(x.isKindOf(Float) and: { x.frac == 0 }) { x.asInteger } { x } }

	prFromServer { |from|
		^matchSource.not or: { from.port == addr.port and: { from.addr == addr.addr } }
	}

	prEvent { |msg|
		var ev = ();
		msg.drop(1).pairsDo { |key, value|
			ev[key.asSymbol] = if(value.isKindOf(Symbol)) { value.asString } { value };
		};
		^ev
	}

	prError { |msg|
		var path = msg[1].asString, reason = msg[2].asString;
		lastError = [path, reason];
		if(postErrors) { "LMDM error: %: %".format(path, reason).postln };
		errorAction.value(path, reason, this);
	}
}
