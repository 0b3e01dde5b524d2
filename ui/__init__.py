"""The Streamlit review UI."""
