-- cloudcredentials.skyfleet.io: healthy once the account has been verified against the cloud.
local lag = generation_lag()
if lag ~= nil then
  return done("Progressing", lag)
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return done("Healthy", describe(ready, "Verified"))
end
if is_true("Degraded") then
  return done("Degraded", describe(condition("Degraded"), "Degraded"))
end
-- Unreachable clouds are retried soon; every other failure (bad keys, missing Secret, unknown
-- provider, invalid spec) waits for a human.
if ready ~= nil and ready.status == "False" and ready.reason ~= "Unreachable" and obj.status.phase == "Failed" then
  if ready.message ~= nil and ready.message ~= "" and ready.reason ~= nil then
    return done("Degraded", ready.reason .. ": " .. ready.message)
  end
  return done("Degraded", describe(ready, "Verification failed"))
end
return done("Progressing", describe(ready, "Verifying the credentials"))
