-- fds-worker keeps the velocity counts of the last 24 h in memory on every replica. Each new order
-- is announced on channel `orders_new` (payload: the order id) when its transaction commits, in
-- commit order, whoever inserted it; a replica fetches the ids it is told about, and reloads the
-- whole window after its listening connection was lost.
CREATE FUNCTION orders_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_new', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER orders_notify
    AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_notify();
