-- images.skyfleet.io
local lag = generation_lag()
if lag ~= nil then
  return done("Progressing", lag)
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return done("Healthy", describe(ready, "Resolved"))
end
if is_true("Degraded") then
  local degraded = condition("Degraded")
  -- A failed bake (spec.build): its reason, and what Ready says of it (where, what went wrong).
  if ready ~= nil and ready.status == "False" and ready.reason == degraded.reason then
    return done("Degraded", ready.reason .. ": " .. describe(ready, ready.reason))
  end
  return done("Degraded", describe(degraded, "Degraded"))
end
-- Unresolved: no native id matches on some cloud; a human has to change the Image or the cloud.
if obj.status.phase == "Unresolved" then
  return done("Degraded", obj.status.message or describe(ready, "Unresolved"))
end
return done("Progressing", describe(ready, "Resolving the image"))
