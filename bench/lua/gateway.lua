-- The comparison gateway for `make bench`: the admission and cache chain
-- of infergate written idiomatically for OpenResty's lua-nginx-module
-- (Debian's libnginx-mod-http-lua, lua-nginx-redis, lua-cjson,
-- lua-nginx-string): API key → tenant by SHA-256, GCRA in a shared dict,
-- JSON body validation of conf/schemas/score.json, Redis response cache.
-- It is what a team would otherwise write; it is not used by infergate.

local cjson  = require "cjson.safe"
local sha256 = require "nginx.sha256"
local str    = require "nginx.string"
local redis  = require "nginx.redis"

local _M = {}

local keys = {}            -- sha256 hex → tenant
local limits = ngx.shared.gcra
local redis_port

function _M.init(keys_file, rport)
    for line in io.lines(keys_file) do
        local digest, tenant = line:match("^(%x+)%s+(%S+)")
        if digest then
            keys[digest:lower()] = tenant
        end
    end
    redis_port = rport
end

local function problem(status, title, detail, extra)
    ngx.status = status
    ngx.header["Content-Type"] = "application/problem+json"
    ngx.header["Cache-Control"] = "no-store"
    if extra then
        for k, v in pairs(extra) do ngx.header[k] = v end
    end
    ngx.print(cjson.encode({type = "about:blank", title = title,
                            status = status, detail = detail}))
    return ngx.exit(status)
end

local function hex(bin)
    return str.to_hex(bin)
end

local function digest(s)
    local h = sha256:new()
    h:update(s)
    return hex(h:final())
end

-- authentication

local function authenticate()
    local key
    local auth = ngx.var.http_authorization
    if auth then
        key = auth:match("^[Bb]earer%s+(%S+)$")
    else
        key = ngx.var.http_x_api_key
    end
    if not key then
        return problem(401, "Unauthorized", "an API key is required",
                       {["WWW-Authenticate"] = 'Bearer realm="api"'})
    end
    local tenant = keys[digest(key)]
    if not tenant then
        return problem(401, "Unauthorized", "unknown API key",
                       {["WWW-Authenticate"] = 'Bearer error="invalid_token"'})
    end
    return tenant
end

-- GCRA: theoretical arrival time per tenant in a shared dict

local function limit(tenant, rate, burst)
    local now = ngx.now()
    local interval = 1 / rate
    local tolerance = interval * burst
    local tat = limits:get(tenant) or now
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - tolerance - interval
    if now < allow_at then
        local retry = math.ceil(allow_at - now)
        return problem(429, "Too Many Requests", "rate limit exceeded",
                       {["Retry-After"] = tostring(retry)})
    end
    limits:set(tenant, new_tat, math.ceil(tolerance + interval) + 1)
    local remaining = math.floor((tolerance - (new_tat - now - interval))
                                 / interval)
    ngx.header["RateLimit"] = string.format('"default";r=%d;t=%d',
        remaining < 0 and 0 or remaining, 0)
end

-- JSON body validation of score.json, by hand as such gateways do

local currencies = {EUR = true, USD = true, GBP = true}
local allowed = {user_id = true, amount = true, currency = true,
                 login_time = true, login_hour = true,
                 account_age_days = true, device_id = true, tags = true}

local function leap(y)
    return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
end

local mdays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

local function date_time(s)
    local y, mo, d, h, mi, se, rest = s:match(
        "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$")
    if not y then return false end
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    h, mi, se = tonumber(h), tonumber(mi), tonumber(se)
    if mo < 1 or mo > 12 or d < 1 then return false end
    local md = mdays[mo]
    if mo == 2 and leap(y) then md = 29 end
    if d > md or h > 23 or mi > 59 or se > 60 then return false end
    rest = rest:gsub("^%.%d+", "")
    return rest == "Z" or rest == "z" or rest:match("^[+-]%d%d:%d%d$") ~= nil
end

local function is_int(v)
    return type(v) == "number" and v == math.floor(v)
end

local function validate(doc)
    local errs = {}
    if type(doc) ~= "table" then
        return {{pointer = "", detail = "must be an object"}}
    end
    for k in pairs(doc) do
        if not allowed[k] then
            errs[#errs + 1] = {pointer = "/" .. k, detail = "not allowed"}
        end
    end
    for _, k in ipairs({"user_id", "amount", "login_time"}) do
        if doc[k] == nil then
            errs[#errs + 1] = {pointer = "/" .. k, detail = "is required"}
        end
    end
    local v = doc.user_id
    if v ~= nil and (type(v) ~= "string"
                     or not ngx.re.find(v, "^u[0-9]{1,12}$", "jo")) then
        errs[#errs + 1] = {pointer = "/user_id", detail = "bad user_id"}
    end
    v = doc.amount
    if v ~= nil and (type(v) ~= "number" or v < 0 or v > 1000000) then
        errs[#errs + 1] = {pointer = "/amount", detail = "out of range"}
    end
    v = doc.currency
    if v ~= nil and not currencies[v] then
        errs[#errs + 1] = {pointer = "/currency", detail = "not allowed"}
    end
    v = doc.login_time
    if v ~= nil and (type(v) ~= "string" or not date_time(v)) then
        errs[#errs + 1] = {pointer = "/login_time", detail = "not a date-time"}
    end
    v = doc.login_hour
    if v ~= nil and (not is_int(v) or v < 0 or v > 23) then
        errs[#errs + 1] = {pointer = "/login_hour", detail = "out of range"}
    end
    v = doc.account_age_days
    if v ~= nil and (not is_int(v) or v < 0) then
        errs[#errs + 1] = {pointer = "/account_age_days",
                           detail = "out of range"}
    end
    v = doc.device_id
    if v ~= nil and (type(v) ~= "string" or not ngx.re.find(v,
        "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
        .. "[0-9a-fA-F]{12}$", "jo")) then
        errs[#errs + 1] = {pointer = "/device_id", detail = "not a uuid"}
    end
    v = doc.tags
    if v ~= nil then
        if type(v) ~= "table" or #v > 8 then
            errs[#errs + 1] = {pointer = "/tags", detail = "bad array"}
        else
            for i, t in ipairs(v) do
                if type(t) ~= "string" or #t > 32 then
                    errs[#errs + 1] = {pointer = "/tags/" .. (i - 1),
                                       detail = "bad item"}
                end
            end
        end
    end
    return errs
end

local function read_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        local f = ngx.req.get_body_file()
        if f then
            local fh = io.open(f, "rb")
            body = fh:read("*a")
            fh:close()
        end
    end
    return body
end

-- the Redis response cache: GET on the way in, SET after the response

local function redis_conn()
    local red = redis:new()
    red:set_timeout(100)
    local ok = red:connect("127.0.0.1", redis_port)
    if not ok then return nil end
    return red
end

local function cache_lookup(key)
    local red = redis_conn()
    if not red then
        ngx.header["X-Cache-Status"] = "BYPASS"
        return
    end
    local res = red:get(key)
    red:set_keepalive(10000, 64)
    if res and res ~= ngx.null then
        ngx.header["Content-Type"] = "application/json"
        ngx.header["X-Cache-Status"] = "HIT"
        ngx.print(res)
        return ngx.exit(200)
    end
    ngx.ctx.cache_key = key
    ngx.header["X-Cache-Status"] = "MISS"
end

local function store(premature, key, body, ttl)
    if premature then return end
    local red = redis_conn()
    if not red then return end
    red:set(key, body, "EX", ttl)
    red:set_keepalive(10000, 64)
end

function _M.access(opts)
    local tenant = authenticate()
    limit(tenant, opts.rate or 1000000, opts.burst or 1000000)

    local body = read_body()
    if ngx.var.http_content_type ~= "application/json" then
        return problem(415, "Unsupported Media Type", "send JSON")
    end
    local doc = cjson.decode(body or "")
    if doc == nil then
        return problem(400, "Bad Request", "the body is not JSON")
    end
    local errs = validate(doc)
    if #errs > 0 then
        ngx.status = 400
        ngx.header["Content-Type"] = "application/problem+json"
        ngx.print(cjson.encode({type = "about:blank", title = "Bad Request",
                                status = 400, errors = errs}))
        return ngx.exit(400)
    end

    if opts.cache then
        cache_lookup("lua:c:" .. digest(tenant .. "\0" .. ngx.req.get_method()
                     .. "\0" .. ngx.var.request_uri .. "\0" .. digest(body)))
    end
end

function _M.body_filter()
    local key = ngx.ctx.cache_key
    if not key then return end
    local chunks = ngx.ctx.chunks or {}
    ngx.ctx.chunks = chunks
    chunks[#chunks + 1] = ngx.arg[1]
    if ngx.arg[2] and ngx.status == 200 then
        ngx.timer.at(0, store, key, table.concat(chunks), 60)
    end
end

return _M
