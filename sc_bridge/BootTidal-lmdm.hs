-- BootTidal-lmdm.hs: TidalCycles playing the lmdm_live instrument (and SuperDirt, if it runs).
--
-- Load it in ghci (or point your editor's Tidal boot file at it):   ghci -ignore-dot-ghci -ghci-script BootTidal-lmdm.hs
-- Every lmdm pattern carries a prompt; the other parameters ride along with it:
--
--   d1 $ prompt "<dub acid>" # cfg 3
--   d1 $ prompt "<dub [acid choir]>" # cfg "<1 3>" # steps 4 # gain 0.8
--   d2 $ s "bd*4"                                   -- SuperDirt, unchanged
--
-- No `s` is needed on an lmdm pattern (with one, SuperDirt would get the event too and look for a sound).
-- Each event reaches the instrument as /lmdm/play with prompt, cfg, ... plus Tidal's cps, cycle and delta,
-- in an OSC bundle stamped with the time the event should be heard, so a change lands on its cycle.
-- LMDM_HOST / LMDM_PORT (default 127.0.0.1:57140) say where the instrument listens.

:set -XOverloadedStrings
:set prompt ""

import Sound.Tidal.Context
import System.IO (hSetEncoding, stdout, utf8)
import System.Environment (lookupEnv)
import Data.Maybe (fromMaybe)

hSetEncoding stdout utf8

lmdmHost <- fromMaybe "127.0.0.1" <$> lookupEnv "LMDM_HOST"
lmdmPort <- maybe (57140 :: Int) read <$> lookupEnv "LMDM_PORT"

-- The same latency for both targets keeps the instrument and SuperDirt in time with each other. It must
-- exceed the instrument's ring headroom plus one block (about 0.36 s with the defaults), or changes land late.
let lmdmLatency = 0.4 :: Double

:{
let lmdmTarget = Target { oName = "lmdm"
                        , oAddress = lmdmHost
                        , oPort = lmdmPort
                        , oBusPort = Nothing
                        , oLatency = lmdmLatency
                        , oWindow = Nothing
                        , oSchedule = Pre BundleStamp
                        , oHandshake = False
                        }
    -- an event is sent to the instrument when it has a prompt; every parameter it has goes with it
    lmdmShape = OSC "/lmdm/play" $ Named {requiredArgs = ["prompt"]}
    dirtTarget = superdirtTarget {oLatency = lmdmLatency}
:}

-- Tidal's usual settings: its control port (6010) and tempo port (9160) stay as in any other Tidal boot
let tidalConfig = defaultConfig

tidal <- startStream tidalConfig [(dirtTarget, [superdirtShape]), (lmdmTarget, [lmdmShape])]

-- the instrument's parameters (names as in its /lmdm/play address)
:{
let prompt = pS "prompt"
    cfg = pF "cfg"
    cfgpp = pF "cfg_pp"
    steps = pI "steps"
    seed = pI "seed"
    sampler = pS "sampler"
-- `gain` is Tidal's own (pF "gain"): the instrument reads it as its output gain, 0..4
:}

:{
let p = streamReplace tidal
    hush = streamHush tidal
    list = streamList tidal
    mute = streamMute tidal
    unmute = streamUnmute tidal
    solo = streamSolo tidal
    unsolo = streamUnsolo tidal
    once = streamOnce tidal
    first = streamFirst tidal
    asap = once
    all = streamAll tidal
    setcps = asap . cps
    d1 = p 1
    d2 = p 2
    d3 = p 3
    d4 = p 4
    d5 = p 5
    d6 = p 6
    d7 = p 7
    d8 = p 8
:}

:set prompt "tidal> "
:set prompt-cont ""
