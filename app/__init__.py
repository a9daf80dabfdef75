"""The KD Explorer Streamlit app: `streamlit run app/Home.py` (or `make run`)."""
