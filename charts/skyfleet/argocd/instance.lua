-- instances.skyfleet.io (written by Skyfleet; one VM each)
local lag = generation_lag()
if lag ~= nil then
  return done("Progressing", lag)
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return done("Healthy", describe(ready, "The VM is running"))
end
local phase = obj.status.phase
if is_true("Degraded") then
  return done("Degraded", describe(condition("Degraded"), "Degraded"))
end
-- Failed: creation gave up; Lost: the VM vanished outside Skyfleet; Stopped: stopped outside Skyfleet.
if phase == "Failed" or phase == "Lost" or phase == "Stopped" then
  return done("Degraded", phase .. ": " .. (obj.status.message or describe(ready, "the VM is not running")))
end
return done("Progressing", describe(ready, "Creating the VM"))
