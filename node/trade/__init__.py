"""People trading: inquiries, negotiations, orders and reviews; the trade service and the
handler for what peers send.
"""
