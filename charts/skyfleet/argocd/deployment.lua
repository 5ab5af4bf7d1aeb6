-- deployments.skyfleet.io
local lag = generation_lag()
if lag ~= nil then
  return done("Progressing", lag)
end
if obj.spec ~= nil and obj.spec.paused == true then
  return done("Suspended", "Paused: spec.paused is set, Skyfleet takes no action on its VMs")
end
if is_true("Degraded") then
  return done("Degraded", describe(condition("Degraded"), "Degraded"))
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return done("Healthy", describe(ready, "Every VM is running"))
end
if obj.status.phase == "Degraded" then
  return done("Degraded", obj.status.message or describe(ready, "Degraded"))
end
if is_true("Progressing") then
  return done("Progressing", describe(condition("Progressing"), "Reconciling"))
end
-- Not ready, not progressing and not degraded: waiting for something that resolves by itself
-- (a dependency, an image, a credential); report the Ready condition's reason.
return done("Progressing", describe(ready, "Waiting for VMs"))
