-- Shared by Skyfleet's Argo CD health checks (Lua 5.1, as run by Argo CD's gopher-lua).
-- Each check is this file followed by one kind's rules; Argo CD passes the object as `obj`.
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

local function is_true(t)
  local c = condition(t)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

-- Returns a message when Skyfleet has not yet seen the current spec, else nil.
local function generation_lag()
  if obj.status == nil then
    return "Waiting for Skyfleet to report a status"
  end
  local generation = obj.metadata.generation
  local observed = obj.status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return "Waiting for Skyfleet to observe generation " .. tostring(generation)
  end
  return nil
end

local function done(status, message)
  hs.status = status
  hs.message = message
  return hs
end
